"""The batched step core every dream face shares (single env, Gymnasium vector env, SB3 VecEnv).

It holds N dream states on one torch device, steps them all with one world-model forward call,
and crosses to numpy once per step. Faces decide only how results are packaged and when rows
are reset; every knob lives here, so it works the same through every face.

Shapes: N = number of dreams, D = flat observation size, E = ensemble members.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from learned_envs.checkpoint import Checkpoint, load_checkpoint
from learned_envs.dream_settings import DreamSettings


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` means CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class StepBatch:
    """One step of N dreams, as numpy: what every face needs to build its return value.

    ``info`` maps each per-dream info key to an ``[N]`` array; faces package it their own way
    (a dict of scalars, Gymnasium's dict of arrays, SB3's list of dicts), so a key added here
    reaches every face.
    """

    observations: np.ndarray  # [N, *obs_shape] in the observation space's dtype
    rewards: np.ndarray  # [N] float64
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray  # [N] bool
    info: dict[str, np.ndarray]  # disagreement [N] f32, penalty [N] f32, clipped_dims [N] i64, halted [N] bool

    def info_row(self, i: int) -> dict[str, Any]:
        """Row ``i``'s info as Python scalars."""
        return {key: value[i].item() for key, value in self.info.items()}


class DreamCore:
    """N dreams stepped together.

    Args:
        checkpoint: a loaded :class:`Checkpoint` or a path to one.
        num_envs: N.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a torch device.
        max_episode_steps: per-row truncation; ``None`` leaves time limits to a wrapper.
        **settings: the :class:`DreamSettings` knobs.
    """

    def __init__(
        self,
        checkpoint: Checkpoint | str,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = None,
        **settings: Any,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.device = resolve_device(device)
        if not isinstance(checkpoint, Checkpoint):
            checkpoint = load_checkpoint(checkpoint, device=str(self.device))
        self.checkpoint = checkpoint
        self.model = checkpoint.model.to(self.device)
        self.start_states = checkpoint.start_states.to(self.device)
        self.observation_space: gym.spaces.Box = checkpoint.observation_space
        self.action_space: gym.Space = checkpoint.action_space
        self.settings = DreamSettings.resolve(checkpoint.metadata.get("dream", {}), settings)
        self.max_episode_steps = max_episode_steps
        self.num_envs = num_envs
        self.obs_shape = self.observation_space.shape
        self.obs_dtype = self.observation_space.dtype
        self.discrete = isinstance(self.action_space, gym.spaces.Discrete)
        self.action_start = int(self.action_space.start) if self.discrete else 0
        if not self.discrete:
            self.action_low = torch.as_tensor(self.action_space.low.reshape(-1), device=self.device)
            self.action_high = torch.as_tensor(self.action_space.high.reshape(-1), device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.state = torch.zeros(num_envs, self.obs_low.shape[0], device=self.device)
        self.elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.members = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    @property
    def temperature(self) -> float:
        return self.settings.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.settings = dataclasses.replace(self.settings, temperature=float(value))

    @property
    def settings(self) -> DreamSettings:
        return self._settings

    @settings.setter
    def settings(self, value: DreamSettings) -> None:
        value.validate()
        # Derived once here, not on every step.
        self._halt_threshold = self._resolve_halt_threshold(value)
        self.obs_low, self.obs_high = (b.to(self.device) for b in self.checkpoint.bounds(value.bounds_margin))
        self._settings = value

    @property
    def halt_threshold(self) -> float | None:
        """The disagreement threshold in force (``"auto"`` resolved from the fit's record)."""
        return self._halt_threshold

    def _resolve_halt_threshold(self, settings: DreamSettings) -> float | None:
        threshold = settings.halt_threshold
        if threshold == "auto":
            recorded = self.checkpoint.metadata.get("fit", {}).get("metrics", {}).get("max_train_disagreement")
            if recorded is None:
                raise ValueError(f"{self.checkpoint.path}: halt_threshold='auto' needs max_train_disagreement, which this checkpoint lacks")
            return settings.halt_factor * float(recorded)
        return None if threshold is None else float(threshold)

    # -- randomness ------------------------------------------------------------------------
    def seed(self, np_random: np.random.Generator) -> None:
        """Seed the torch generator from a face's ``np_random``, the only source of randomness."""
        self.generator.manual_seed(int(np_random.integers(2**62)))

    # -- resets ----------------------------------------------------------------------------
    def reset_rows(self, rows: torch.Tensor | None = None, initial_observations: np.ndarray | None = None) -> None:
        """Start new episodes in ``rows`` (``[N]`` bool mask; ``None`` = all) from logged starts,
        or from ``initial_observations [R, *obs_shape]`` (one per reset row, or one for all)."""
        if rows is None:
            rows = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        count = int(rows.sum())
        if count == 0:
            return
        if initial_observations is not None:
            starts = torch.as_tensor(np.asarray(initial_observations, dtype=np.float32), device=self.device).reshape(-1, self.state.shape[1])
            if starts.shape[0] == 1:
                starts = starts.expand(count, -1)
            elif starts.shape[0] != count:
                raise ValueError(f"initial_observation: got {starts.shape[0]} observations for {count} resetting dreams")
        else:
            pick = torch.randint(self.start_states.shape[0], (count,), device=self.device, generator=self.generator)
            starts = self.start_states[pick]
        self.state[rows] = starts
        self.elapsed[rows] = 0
        if self.settings.propagation == "fixed":
            self.members[rows] = torch.randint(self.model.ensemble_size, (count,), device=self.device, generator=self.generator)

    def observations(self, rows: torch.Tensor | None = None) -> np.ndarray:
        """Current observations ``[N or R, *obs_shape]`` as numpy in the space's dtype."""
        state = self.state if rows is None else self.state[rows]
        # A copy: on CPU .numpy() shares memory with the state that the next step overwrites.
        return np.array(state.cpu().numpy(), dtype=self.obs_dtype, copy=True).reshape(-1, *self.obs_shape)

    # -- stepping --------------------------------------------------------------------------
    def _action_tensor(self, actions: Any) -> torch.Tensor:
        action = torch.as_tensor(np.asarray(actions), device=self.device)
        if self.discrete:
            action = action.reshape(self.num_envs)
            return action - self.action_start if self.action_start else action
        return torch.clamp(action.reshape(self.num_envs, -1).float(), self.action_low, self.action_high)

    def step(self, actions: Any) -> StepBatch:
        """Advance every dream by one step with ``actions`` (``[N]`` or ``[N, *act_shape]``)."""
        s = self.settings
        members = {"random": None, "fixed": self.members, "mean": "mean"}[s.propagation]
        penalised = s.uncertainty_penalty > 0
        out = self.model.predict(self.state, self._action_tensor(actions), generator=self.generator,
                                 temperature=s.temperature, members=members, with_std=penalised)
        raw = out["next_state"]
        nxt = torch.clamp(raw, self.obs_low, self.obs_high)
        clipped = (nxt != raw).sum(-1)
        self.state = nxt
        self.elapsed += 1

        reward = out["reward"]
        penalty = s.uncertainty_penalty * out["model_std"].max(0).values if penalised else torch.zeros_like(reward)
        if penalised:
            reward = reward - penalty
        halted = clipped > 0 if s.out_of_bounds == "halt" else torch.zeros_like(clipped, dtype=torch.bool)
        if self._halt_threshold is not None:
            halted = halted | (out["disagreement"] > self._halt_threshold)
        if s.halt_reward is not None:
            reward = torch.where(halted, torch.full_like(reward, float(s.halt_reward)), reward)
        terminated = (out["termination_prob"] > 0.5) | halted
        if self.max_episode_steps is not None:
            # As Gymnasium's TimeLimit: a terminating last step is truncated too (both flags set).
            truncated = self.elapsed >= self.max_episode_steps
        else:
            truncated = torch.zeros_like(terminated)

        # One device->host crossing per step: pack everything into a single float tensor.
        flags = torch.stack([terminated, truncated, halted], dim=1).float()
        values = torch.stack([reward, out["disagreement"], penalty, clipped.float()], dim=1)
        packed = torch.cat([nxt, values, flags], dim=1).cpu().numpy()
        d = nxt.shape[1]
        return StepBatch(
            observations=np.ascontiguousarray(packed[:, :d], dtype=self.obs_dtype).reshape(-1, *self.obs_shape),
            rewards=packed[:, d].astype(np.float64),
            terminated=packed[:, d + 4] > 0.5,
            truncated=packed[:, d + 5] > 0.5,
            info={
                "disagreement": packed[:, d + 1].copy(),
                "penalty": packed[:, d + 2].copy(),
                "clipped_dims": packed[:, d + 3].astype(np.int64),
                "halted": packed[:, d + 6] > 0.5,
            },
        )
