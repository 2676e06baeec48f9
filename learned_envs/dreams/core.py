"""The batched step core every dream face shares (single env, Gymnasium vector env, SB3 VecEnv).

It holds N dream states on one torch device, steps them all with one world-model forward call,
and crosses to numpy once per step. Faces decide only how results are packaged and when rows
are reset.

Shapes: N = number of dreams, D = flat observation size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from learned_envs.checkpoint import Checkpoint, load_checkpoint


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` means CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class StepBatch:
    """One step of N dreams, as numpy: what every face needs to build its return value."""

    observations: np.ndarray  # [N, *obs_shape] in the observation space's dtype
    rewards: np.ndarray  # [N] float64
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray  # [N] bool
    disagreement: np.ndarray  # [N] float32
    clipped_dims: np.ndarray  # [N] int64, observation dimensions clipped to the observed bounds
    halted: np.ndarray  # [N] bool, episode ended because the dream left its data's support


class DreamCore:
    """N dreams stepped together.

    Args:
        checkpoint: a loaded :class:`Checkpoint` or a path to one.
        num_envs: N.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a torch device.
        temperature: scales the model's sampled noise (0: deterministic member means).
        max_episode_steps: per-row truncation; ``None`` leaves time limits to a wrapper.
        out_of_bounds: what happens when a predicted observation leaves the bounds seen in the
            data: ``"halt"`` ends the episode there (``terminated``, ``info["halted"]``), since
            the model cannot be believed beyond its data and an agent would exploit it;
            ``"clip"`` clips and goes on. Either way the observation is clipped.
        halt_reward: reward of a halting step; ``None`` keeps the model's predicted reward.
    """

    def __init__(
        self,
        checkpoint: Checkpoint | str,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        temperature: float | None = None,
        max_episode_steps: int | None = None,
        out_of_bounds: str | None = None,
        halt_reward: float | None = None,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.device = resolve_device(device)
        if not isinstance(checkpoint, Checkpoint):
            checkpoint = load_checkpoint(checkpoint, device=str(self.device))
        self.checkpoint = checkpoint
        self.model = checkpoint.model.to(self.device)
        self.start_states = checkpoint.start_states.to(self.device)
        self.obs_low = checkpoint.obs_low.to(self.device)
        self.obs_high = checkpoint.obs_high.to(self.device)
        self.observation_space: gym.spaces.Box = checkpoint.observation_space
        self.action_space: gym.Space = checkpoint.action_space
        defaults = checkpoint.metadata.get("dream", {})
        self.temperature = float(defaults.get("temperature", 1.0) if temperature is None else temperature)
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        self.max_episode_steps = max_episode_steps
        self.out_of_bounds = str(defaults.get("out_of_bounds", "halt") if out_of_bounds is None else out_of_bounds)
        if self.out_of_bounds not in ("halt", "clip"):
            raise ValueError(f"out_of_bounds must be 'halt' or 'clip', got {self.out_of_bounds!r}")
        self.halt_reward = defaults.get("halt_reward") if halt_reward is None else halt_reward
        self.num_envs = num_envs
        self.obs_shape = self.observation_space.shape
        self.obs_dtype = self.observation_space.dtype
        self.discrete = isinstance(self.action_space, gym.spaces.Discrete)
        self.action_start = int(self.action_space.start) if self.discrete else 0
        self.generator = torch.Generator(device=self.device)
        self.state = torch.zeros(num_envs, self.obs_low.shape[0], device=self.device)
        self.elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)

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

    def observations(self, rows: torch.Tensor | None = None) -> np.ndarray:
        """Current observations ``[N or R, *obs_shape]`` as numpy in the space's dtype."""
        state = self.state if rows is None else self.state[rows]
        # A copy: on CPU .numpy() shares memory with the state that the next step overwrites.
        return np.array(state.cpu().numpy(), dtype=self.obs_dtype, copy=True).reshape(-1, *self.obs_shape)

    # -- stepping --------------------------------------------------------------------------
    def step(self, actions: Any) -> StepBatch:
        """Advance every dream by one step with ``actions`` (``[N]`` or ``[N, *act_shape]``)."""
        action = torch.as_tensor(np.asarray(actions), device=self.device)
        if self.discrete:
            action = action.reshape(self.num_envs) - self.action_start
        else:
            action = action.reshape(self.num_envs, -1).float()
            low = torch.as_tensor(self.action_space.low.reshape(-1), device=self.device)
            high = torch.as_tensor(self.action_space.high.reshape(-1), device=self.device)
            action = torch.maximum(torch.minimum(action, high), low)
        out = self.model.predict(self.state, action, generator=self.generator, temperature=self.temperature)
        raw = out["next_state"]
        nxt = torch.maximum(torch.minimum(raw, self.obs_high), self.obs_low)
        clipped = (nxt != raw).sum(-1)
        self.state = nxt
        self.elapsed += 1
        reward = out["reward"]
        halted = clipped > 0 if self.out_of_bounds == "halt" else torch.zeros_like(clipped, dtype=torch.bool)
        if self.halt_reward is not None:
            reward = torch.where(halted, torch.full_like(reward, float(self.halt_reward)), reward)
        terminated = (out["termination_prob"] > 0.5) | halted
        if self.max_episode_steps is not None:
            truncated = (self.elapsed >= self.max_episode_steps) & ~terminated
        else:
            truncated = torch.zeros_like(terminated)
        # One device->host crossing per step: pack everything into a single float tensor.
        packed = torch.cat(
            [nxt, reward[:, None], terminated[:, None].float(), truncated[:, None].float(),
             out["disagreement"][:, None], clipped[:, None].float(), halted[:, None].float()],
            dim=1,
        ).cpu().numpy()
        d = nxt.shape[1]
        return StepBatch(
            observations=packed[:, :d].astype(self.obs_dtype, copy=False).reshape(-1, *self.obs_shape),
            rewards=packed[:, d].astype(np.float64),
            terminated=packed[:, d + 1] > 0.5,
            truncated=packed[:, d + 2] > 0.5,
            disagreement=packed[:, d + 3].copy(),
            clipped_dims=packed[:, d + 4].astype(np.int64),
            halted=packed[:, d + 5] > 0.5,
        )
