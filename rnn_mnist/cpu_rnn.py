"""The plain RNN's math for CPUs, in fewer and larger operations than torch's nn.RNN takes there.

nn.RNN on a CPU runs every time step as separate small operations, forward and backward, input
projection included. Here each layer projects the inputs of all 28 steps in one matrix product,
loops only over what is truly sequential (h_t = act(xp_t + h_{t-1} W_hh^T)), and gets every weight
gradient from one product over all steps in backward. Same parameters (nn.RNN's own tensors), same
math: gradients agree with nn.RNN's to float rounding (tests/test_model.py checks). On a GPU,
nn.RNN's cuDNN kernels are used instead.
"""

import torch
from torch import nn


def _relu_steps(hs, w_hh) -> None:
    """hs holds each step's input projection; turn it into the hidden states, in place."""
    w_hh_t = w_hh.t()
    hs[0].relu_()  # h_0 is zero: nothing to add at the first step
    for t in range(1, len(hs)):
        hs[t].addmm_(hs[t - 1], w_hh_t).relu_()


def _tanh_steps(hs, w_hh) -> None:
    """As _relu_steps, for tanh, written as tanh(z) = 2 sigmoid(2z) - 1.

    torch's sigmoid costs a fifth of its tanh on a CPU, and the recurrence can carry s = sigmoid(2z)
    instead of h = 2s - 1 by folding the affine map into the weights: 2 z_t = 2 xp_t + h_{t-1} 2W^T
    = (2 xp_t - 2 W 1) + s_{t-1} 4W^T. Exact in real arithmetic; one rounding more in floats.
    """
    hs.mul_(2)
    hs[1:].sub_(2 * w_hh.sum(1))  # the -1 of h = 2s - 1, through W, from the second step on
    w4_t = 4 * w_hh.t()
    hs[0].sigmoid_()
    for t in range(1, len(hs)):
        hs[t].addmm_(hs[t - 1], w4_t).sigmoid_()
    hs.mul_(2).sub_(1)


class _ElmanLayer(torch.autograd.Function):
    """One recurrent layer over a time-major sequence: x (T, B, I) -> hidden states (T, B, H)."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, relu: bool):
        steps, batch, inputs = x.shape
        hidden = w_hh.shape[0]
        hs = torch.addmm(b_ih + b_hh, x.reshape(steps * batch, inputs), w_ih.t()).view(steps, batch, hidden)
        if relu:
            _relu_steps(hs, w_hh)
        else:
            _tanh_steps(hs, w_hh)
        ctx.save_for_backward(x, hs, w_ih, w_hh)
        ctx.relu = relu
        return hs

    @staticmethod
    def backward(ctx, grad_hs):
        x, hs, w_ih, w_hh = ctx.saved_tensors
        steps, batch, inputs = x.shape
        hidden = w_hh.shape[0]
        slope = (hs > 0).to(hs.dtype) if ctx.relu else 1 - hs * hs  # act'(z_t), from act(z_t) itself
        dz = grad_hs * slope  # the gradient at each step's pre-activation from above ...
        for t in range(steps - 1, 0, -1):  # ... plus what flows back through time
            dz[t - 1].addcmul_(dz[t] @ w_hh, slope[t - 1])
        flat = dz.view(steps * batch, hidden)
        d_w_hh = flat[batch:].t() @ hs[:-1].reshape((steps - 1) * batch, hidden)
        d_w_ih = flat.t() @ x.reshape(steps * batch, inputs)
        d_b = flat.sum(0)
        d_x = (flat @ w_ih).view(steps, batch, inputs) if ctx.needs_input_grad[0] else None
        return d_x, d_w_ih, d_w_hh, d_b, d_b, None


def last_hidden(rnn: nn.RNN, x: torch.Tensor) -> torch.Tensor:
    """The top layer's hidden state after the last step, for batch-first x (B, T, I): (B, H)."""
    relu = rnn.nonlinearity == "relu"
    h = x.transpose(0, 1).contiguous()  # time-major: each step's batch is one contiguous block
    for layer in range(rnn.num_layers):
        weights = [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h = _ElmanLayer.apply(h, *weights, relu)
    return h[-1]
