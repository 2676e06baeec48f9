"""Probabilistic MLP ensemble world model (the PETS / MBPO family).

E members share one set of batched weights ``[E, in, out]``, so a forward call over all members
and any batch size B is a handful of ``baddbmm`` calls. Each member outputs a Gaussian over the
normalised target ``[Δobs, reward]``; a separate classifier reads the *next* observation and
gives the probability that the episode terminates there (Gymnasium envs decide termination from
the state they reach).

Tensor shapes: B = batch, E = members, D = flat observation size, A = action features
(one-hot width for Discrete, flat size for Box), T = D + 1 targets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from learned_envs.models.normalizer import Normalizer


@dataclass
class EnsembleConfig:
    """Everything needed to rebuild the network; stored in the checkpoint's metadata."""

    obs_dim: int
    action_dim: int
    discrete_actions: bool
    ensemble_size: int = 7
    hidden_size: int = 200
    num_layers: int = 4
    termination_hidden_size: int = 64

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class EnsembleLinear(nn.Module):
    """E independent linear layers applied at once: ``[E, B, in] -> [E, B, out]``."""

    def __init__(self, ensemble_size: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, out_features))
        bound = 1.0 / in_features**0.5
        nn.init.trunc_normal_(self.weight, std=bound, a=-2 * bound, b=2 * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleWorldModel(nn.Module):
    """The WorldModel of DESIGN.md for state-space observations.

    ``encode``/``decode`` are the identity here; ``predict`` steps a batch of states.
    """

    def __init__(self, config: EnsembleConfig):
        super().__init__()
        self.config = config
        c = config
        in_dim, out_dim = c.obs_dim + c.action_dim, c.obs_dim + 1
        self.input_norm = Normalizer(in_dim)
        self.target_norm = Normalizer(out_dim)
        sizes = [in_dim] + [c.hidden_size] * c.num_layers
        self.hidden = nn.ModuleList(EnsembleLinear(c.ensemble_size, i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.head = EnsembleLinear(c.ensemble_size, c.hidden_size, 2 * out_dim)
        self.max_logvar = nn.Parameter(torch.full((c.ensemble_size, 1, out_dim), 0.5))
        self.min_logvar = nn.Parameter(torch.full((c.ensemble_size, 1, out_dim), -10.0))
        self.termination = nn.Sequential(
            nn.Linear(c.obs_dim, c.termination_hidden_size),
            nn.SiLU(),
            nn.Linear(c.termination_hidden_size, c.termination_hidden_size),
            nn.SiLU(),
            nn.Linear(c.termination_hidden_size, 1),
        )

    @property
    def ensemble_size(self) -> int:
        return self.head.weight.shape[0]

    # -- WorldModel protocol -------------------------------------------------------------
    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """``[B, D] -> [B, D]``: state-space models use the observation as the state."""
        return obs

    def decode(self, state: torch.Tensor) -> torch.Tensor:
        return state

    def action_features(self, action: torch.Tensor) -> torch.Tensor:
        """``[B]`` indices (Discrete) or ``[B, A]`` floats (Box) -> ``[B, A]`` floats."""
        if self.config.discrete_actions:
            return F.one_hot(action.long().reshape(-1), self.config.action_dim).to(self.head.weight.dtype)
        return action.reshape(action.shape[0], -1).to(self.head.weight.dtype)

    def distribution(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's Gaussian over normalised targets: mean and log-variance, each ``[E, B, T]``."""
        mean, raw_logvar = self._raw_members(state, action)
        return mean, self._bound_logvar(raw_logvar, self.max_logvar, self.min_logvar)

    def _raw_members(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and unbounded log-variances ``[E, B, T]`` of every member for ``[B]`` rows."""
        x = self.input_norm.normalize(torch.cat([state, self.action_features(action)], dim=-1))
        return self._members(x.unsqueeze(0).expand(self.ensemble_size, -1, -1))

    def _members(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[E, B, in]`` normalised inputs -> means and unbounded log-variances ``[E, B, T]``."""
        for layer in self.hidden:
            h = F.silu(layer(h))
        mean, raw_logvar = self.head(h).chunk(2, dim=-1)
        return mean, raw_logvar

    @staticmethod
    def _bound_logvar(logvar: torch.Tensor, max_logvar: torch.Tensor, min_logvar: torch.Tensor) -> torch.Tensor:
        # Soft bounds (PETS): smooth everywhere, so the NLL cannot push the variance to 0 or infinity.
        logvar = max_logvar - F.softplus(max_logvar - logvar)
        return min_logvar + F.softplus(logvar - min_logvar)

    def _forward_members(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[E, B, in]`` normalised inputs -> mean, soft-bounded log-variance ``[E, B, T]`` (training)."""
        mean, raw_logvar = self._members(h)
        return mean, self._bound_logvar(raw_logvar, self.max_logvar, self.min_logvar)

    def termination_logit(self, next_state: torch.Tensor) -> torch.Tensor:
        """``[B, D] -> [B]`` logit that the episode ends in ``next_state``."""
        obs_norm = (next_state - self.input_norm.mean[: self.config.obs_dim]) / self.input_norm.std[: self.config.obs_dim]
        return self.termination(obs_norm).squeeze(-1)

    @torch.inference_mode()
    def predict(
        self,
        state: torch.Tensor,
        action: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        members: torch.Tensor | str | None = None,
        with_std: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Step a batch of states.

        Args:
            state: ``[B, D]``. action: ``[B]`` (Discrete) or ``[B, A]`` (Box).
            generator: source of every random draw (member choice and noise).
            temperature: scales the sampled noise; 0 gives the chosen member's mean.
            members: ``[B]`` member index per row; ``None`` draws one per row at random;
                ``"mean"`` uses the average over members (mean and variance).
            with_std: also return ``model_std`` (skipped on the dream's hot path when no
                penalty needs it).

        Returns a dict of ``next_state [B, D]``, ``reward [B]``, ``termination_prob [B]``,
        ``disagreement [B]`` (norm of the std between members' predicted Δobs, in data std
        units) and, with ``with_std``, ``model_std [E, B]`` (each member's predicted std norm).
        """
        mean, raw_logvar = self._raw_members(state, action)
        batch, d = state.shape[0], self.config.obs_dim
        if isinstance(members, str):
            if members != "mean":
                raise ValueError(f"members must be a tensor, None or 'mean', not {members!r}")
            mu = mean.mean(0)
            if temperature > 0:
                var = self._bound_logvar(raw_logvar, self.max_logvar, self.min_logvar).exp().mean(0)
                mu = mu + temperature * var.sqrt() * torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
        else:
            if members is None:
                members = torch.randint(self.ensemble_size, (batch,), device=state.device, generator=generator)
            rows = torch.arange(batch, device=state.device)
            mu = mean[members, rows]
            if temperature > 0:  # bound only the chosen members' log-variances: [B, T], not [E, B, T]
                logvar = self._bound_logvar(raw_logvar[members, rows], self.max_logvar[members, 0], self.min_logvar[members, 0])
                noise = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
                mu = mu + temperature * torch.exp(0.5 * logvar) * noise
        target = self.target_norm.denormalize(mu)
        next_state = state + target[:, :d]
        out = {
            "next_state": next_state,
            "reward": target[:, d],
            "termination_prob": torch.sigmoid(self.termination_logit(next_state)),
            "disagreement": mean[:, :, :d].std(0, unbiased=False).norm(dim=-1),
        }
        if with_std:
            logvar = self._bound_logvar(raw_logvar[:, :, :d], self.max_logvar[:, :, :d], self.min_logvar[:, :, :d])
            out["model_std"] = torch.exp(0.5 * logvar).norm(dim=-1)
        return out

    def keep_members(self, index: torch.Tensor) -> None:
        """Drop every member not in ``index`` (e.g. keep the elites) in place."""
        with torch.no_grad():
            for module in [*self.hidden, self.head]:
                module.weight = nn.Parameter(module.weight[index].clone())
                module.bias = nn.Parameter(module.bias[index].clone())
            self.max_logvar = nn.Parameter(self.max_logvar[index].clone())
            self.min_logvar = nn.Parameter(self.min_logvar[index].clone())
        self.config.ensemble_size = int(len(index))
