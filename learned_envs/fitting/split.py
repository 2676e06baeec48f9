"""Train/holdout splits that never cut an episode in two, and Transitions as device tensors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from learned_envs.data.transitions import Transitions
from learned_envs.models.base import Batch

# A single episode shorter than this is validated on its training rows (a tail would be too short to tell anything).
MIN_TAIL_ROWS = 10


def split_by_episode(data: Transitions, holdout_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``[N] bool`` masks (train, holdout).

    Whole episodes are held out, so the model is never scored on rows of an episode it trained
    on. Data of a single episode (one long log) holds out its last ``holdout_fraction`` of rows
    instead; below :data:`MIN_TAIL_ROWS` rows nothing is held out (the caller then validates on
    the training rows and says so).
    """
    n = len(data)
    if holdout_fraction <= 0:
        return np.ones(n, bool), np.zeros(n, bool)
    episodes = data.episode_index()
    num = int(episodes.max()) + 1
    if num < 2:
        tail = int(round(n * holdout_fraction))
        holdout = np.zeros(n, bool)
        if tail >= 1 and n - tail >= 1 and n >= MIN_TAIL_ROWS:
            holdout[n - tail:] = True
        return ~holdout, holdout
    n_hold = min(num - 1, max(1, int(round(num * holdout_fraction))))
    held = rng.choice(num, size=n_hold, replace=False)
    holdout = np.isin(episodes, held)
    return ~holdout, holdout


def to_batch(data: Transitions, device: str | torch.device) -> Batch:
    """Every row of ``data`` as float32 device tensors (actions as indices for Discrete spaces)."""
    n = len(data)
    discrete = isinstance(data.action_space, gym.spaces.Discrete)
    start = int(data.action_space.start) if discrete else 0
    action = (torch.as_tensor(np.asarray(data.actions).reshape(n) - start, dtype=torch.long, device=device) if discrete
              else torch.as_tensor(np.asarray(data.actions, dtype=np.float32).reshape(n, -1), device=device))
    return Batch(
        obs=torch.as_tensor(np.asarray(data.observations, dtype=np.float32).reshape(n, -1), device=device),
        action=action,
        next_obs=torch.as_tensor(np.asarray(data.next_observations, dtype=np.float32).reshape(n, -1), device=device),
        reward=torch.as_tensor(np.asarray(data.rewards, dtype=np.float32), device=device),
        terminated=torch.as_tensor(np.asarray(data.terminations, dtype=np.float32), device=device),
    )
