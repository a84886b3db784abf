"""SGD (with momentum) and Adam, with torch.optim's update rules and defaults.

Why not torch.optim: its first use imports torch._dynamo, which costs about a second and 150 MB
of memory per process, more than this whole training job needs besides torch itself. The updates
below are torch's own (SGD without dampening or Nesterov; Adam with bias correction, betas
(0.9, 0.999), eps 1e-8), so results match torch.optim's to float rounding.
"""

import math

import torch


class SGD:
    def __init__(self, params, lr: float, momentum: float = 0.0):
        self.params = list(params)
        self.lr, self.momentum = lr, momentum
        self.buffers = [None] * len(self.params)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            step = p.grad
            if self.momentum:
                if self.buffers[i] is None:
                    self.buffers[i] = p.grad.clone()
                else:
                    self.buffers[i].mul_(self.momentum).add_(p.grad)
                step = self.buffers[i]
            p.add_(step, alpha=-self.lr)

    def state_dict(self) -> dict:
        return {"kind": "sgd", "momentum_buffers": list(self.buffers)}

    def load_state_dict(self, state: dict) -> None:
        self.buffers = [None if b is None else b.to(p.device) for b, p in zip(state["momentum_buffers"], self.params)]


class Adam:
    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.steps += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1 ** self.steps)
        root_correction = math.sqrt(1 - beta2 ** self.steps)
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            m.lerp_(p.grad, 1 - beta1)
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            denom = (v.sqrt() / root_correction).add_(self.eps)
            p.addcdiv_(m, denom, value=-step_size)

    def state_dict(self) -> dict:
        return {"kind": "adam", "steps": self.steps, "exp_avg": list(self.exp_avg), "exp_avg_sq": list(self.exp_avg_sq)}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        self.exp_avg = [t.to(p.device) for t, p in zip(state["exp_avg"], self.params)]
        self.exp_avg_sq = [t.to(p.device) for t, p in zip(state["exp_avg_sq"], self.params)]


@torch.no_grad()
def clip_grad_norm_(params, max_norm: float) -> None:
    """Scale the gradients so their joint L2 norm is at most max_norm (torch.nn.utils' rule)."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale)
