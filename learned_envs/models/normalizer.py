"""Per-feature standardisation whose statistics travel inside the checkpoint."""

from __future__ import annotations

import torch
from torch import nn


class Normalizer(nn.Module):
    """``x -> (x - mean) / std`` over the last dimension; ``[..., D]`` in, ``[..., D]`` out.

    Statistics are buffers, so they are saved with the weights and follow ``.to(device)``.
    """

    def __init__(self, dim: int, min_std: float = 1e-6):
        super().__init__()
        self.min_std = min_std
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Set the statistics from ``x [N, D]``; constant features keep a std of 1."""
        self.mean.copy_(x.mean(0))
        std = x.std(0, unbiased=False)
        self.std.copy_(torch.where(std < self.min_std, torch.ones_like(std), std))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean
