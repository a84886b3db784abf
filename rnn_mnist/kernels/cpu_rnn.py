"""The plain RNN's math for CPUs, in fewer and larger operations than torch's nn.RNN takes there.

nn.RNN on a CPU runs every time step as separate small operations, forward and backward, input
projection included. Here each layer projects the inputs of all 28 steps in one matrix product,
loops only over what is truly sequential (h_t = act(xp_t + h_{t-1} W_hh^T)), and gets every weight
gradient from one product over all steps in backward. The top layer hands on only its last step,
so its backward starts from one (batch, hidden) gradient instead of a mostly-zero sequence. Same
parameters (nn.RNN's own tensors), same math: gradients agree with nn.RNN's to float rounding
(tests/test_kernels.py checks). On a GPU, nn.RNN's cuDNN kernels are used instead.
"""

import torch
from torch import nn

from ..model import RNNModel

_ONE = torch.ones(())


def _relu_forward(x2d, w_ih, w_hh, bias, shape):
    hs = torch.addmm(bias, x2d, w_ih.t()).view(shape)
    h, w_hh_t = hs.unbind(0), w_hh.t()
    h[0].relu_()  # h_0 is zero: nothing to add at the first step
    for t in range(1, len(h)):
        h[t].addmm_(h[t - 1], w_hh_t).relu_()
    return hs


def _tanh_forward(x2d, w_ih, w_hh, bias, shape):
    """As _relu_forward, for tanh, written as tanh(z) = 2 sigmoid(2z) - 1.

    torch's sigmoid costs a fifth of its tanh on a CPU, and the recurrence can carry s = sigmoid(2z)
    instead of h = 2s - 1 by folding the affine map into the weights: 2 z_t = 2 xp_t + h_{t-1} 2W^T
    = (2 xp_t - 2 W 1) + s_{t-1} 4W^T. Exact in real arithmetic; one rounding more in floats.
    """
    w_sum = w_hh.sum(1)  # W 1: what the -1 of h = 2s - 1 contributes through W
    hs = torch.addmm(bias - w_sum, x2d, w_ih.t(), beta=2, alpha=2).view(shape)
    s, w4_t = hs.unbind(0), 4 * w_hh.t()
    s[0].add_(w_sum, alpha=2).sigmoid_()  # no previous step at t = 0, so nothing to take back
    for t in range(1, len(s)):
        s[t].addmm_(s[t - 1], w4_t).sigmoid_()
    return hs.lerp_(_ONE, -1)  # 2s - 1 in one pass


class _ElmanLayer(torch.autograd.Function):
    """One recurrent layer over a time-major sequence: x (T, B, I) -> hidden states (T, B, H),
    or only the last one (B, H) when `last_only`."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, relu: bool, last_only: bool):
        steps, batch, inputs = x.shape
        step = _relu_forward if relu else _tanh_forward
        hs = step(x.reshape(steps * batch, inputs), w_ih, w_hh, b_ih + b_hh, (steps, batch, w_hh.shape[0]))
        ctx.save_for_backward(x, hs, w_ih, w_hh)
        ctx.relu = relu
        return hs[-1].clone() if last_only else hs

    @staticmethod
    def backward(ctx, grad):
        x, hs, w_ih, w_hh = ctx.saved_tensors
        steps, batch, inputs = x.shape
        # act'(z_t), from act(z_t) itself: 1 - h^2 for tanh, 1 where h > 0 for relu (h is never negative)
        slope = hs.sign() if ctx.relu else torch.addcmul(_ONE, hs, hs, value=-1)
        if grad.dim() == 2:  # the top layer: only its last step had a gradient from above
            dz = torch.zeros_like(hs)  # the gradient at each step's pre-activation
            dz[-1] = grad
        else:
            dz = grad.clone()
        d, s = dz.unbind(0), slope.unbind(0)
        d[-1].mul_(s[-1])
        for t in range(steps - 1, 0, -1):  # back through time: (from above + dz_t W) * act'(z_{t-1})
            d[t - 1].addmm_(d[t], w_hh).mul_(s[t - 1])
        flat = dz.view(steps * batch, -1)
        d_w_hh = flat[batch:].t() @ hs[:-1].reshape((steps - 1) * batch, -1)
        d_w_ih = flat.t() @ x.reshape(steps * batch, inputs)
        d_b = flat.sum(0)
        d_x = (flat @ w_ih).view(steps, batch, inputs) if ctx.needs_input_grad[0] else None
        return d_x, d_w_ih, d_w_hh, d_b, d_b, None, None


def last_hidden(rnn: nn.RNN, x: torch.Tensor) -> torch.Tensor:
    """The top layer's hidden state after the last step, for batch-first x (B, T, I): (B, H)."""
    relu = rnn.nonlinearity == "relu"
    h = x.transpose(0, 1).contiguous()  # time-major: each step's batch is one contiguous block
    for layer in range(rnn.num_layers):
        weights = [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h = _ElmanLayer.apply(h, *weights, relu, layer == rnn.num_layers - 1)
    return h


class CpuRNNModel(RNNModel):
    """RNNModel (cell "rnn") whose recurrence runs through `last_hidden` above: the same parameters,
    the same state_dict, so its checkpoints load into RNNModel and back."""

    def last_hidden(self, x):
        return last_hidden(self.rnn, x)
