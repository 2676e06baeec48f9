"""oneDNN for an agent's large linear layers, on CPUs where it outruns MKL.

stable-baselines3 builds its networks from ``nn.Linear``, whose products torch sends to MKL on
the CPU. On AMD Zen 5 cores MKL runs its AVX2 kernels at about half of what oneDNN's AVX-512
kernels do (:func:`learned_envs.models.array_ops.onednn_outruns_mkl`, the rule the dreams' own
products follow): one SAC update of SB3's default 256 x 256 networks on a Hopper-sized problem,
batch 256, one thread, takes ~6.0 ms through oneDNN against ~8.3 ms through MKL.
:func:`use_onednn` turns an agent's ``nn.Linear`` layers into :class:`OneDNNLinear`, which sends
its large float32 CPU products (forward and backward) to oneDNN and every other one to
``F.linear`` as before. Only the layers' class changes: the same parameters (an optimizer that
holds them stays valid), the same state dict, so a saved agent loads as plain SB3.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from learned_envs.models import array_ops


def _product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x [B, in] @ weight [out, in]^T (+ bias [out])`` through oneDNN."""
    return array_ops.ONEDNN_LINEAR(x, weight, bias, "none", [], "")


class _OneDNNLinearFunction(torch.autograd.Function):
    """``F.linear`` on ``[B, in]`` rows with all three products (forward, input and weight
    gradients) through oneDNN; the same results as MKL's to float32 rounding."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _product(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        # grad_x [B, in] = grad [B, out] @ weight [out, in]; grad_weight [out, in] = grad^T @ x.
        grad_x = _product(grad, weight.t(), None) if ctx.needs_input_grad[0] else None
        grad_weight = _product(grad.t().contiguous(), x.t(), None) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose products of at least ``array_ops.ONEDNN_MIN_MACS`` multiply-adds (rows x
    in x out), float32 on the CPU, go through oneDNN; smaller ones (an agent acting on a few
    observations) through ``F.linear``, where oneDNN's fixed cost of ~10 us a call would lose."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // max(self.in_features, 1)
        if x.dtype != torch.float32 or not array_ops.onednn_takes(rows * self.in_features * self.out_features, self.weight):
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(rows, self.in_features)
        if not flat.is_contiguous():
            flat = flat.contiguous()
        return _OneDNNLinearFunction.apply(flat, self.weight, self.bias).reshape(*x.shape[:-1], self.out_features)


def use_onednn(module: nn.Module) -> int:
    """Turn every ``nn.Linear`` inside ``module`` (an SB3 policy: actor, critics and their targets)
    into :class:`OneDNNLinear` in place, where the CPU rule chose oneDNN; returns how many were
    turned (0 elsewhere, and for layers of ``nn.Linear`` subclasses, which keep their own forward)."""
    if array_ops.ONEDNN_LINEAR is None:
        return 0
    turned = 0
    for layer in module.modules():
        if type(layer) is nn.Linear:
            layer.__class__ = OneDNNLinear
            turned += 1
    return turned
