"""Guessing spaces from data when neither the file nor the user names them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from learned_envs.data.transitions import DataError


def infer_spaces(arrays: dict[str, np.ndarray], source: str) -> tuple[gym.Space, gym.Space]:
    """Observation space: an unbounded float32 Box of the data's shape. Action space: Discrete
    when every action is a whole number in a single column, else a Box spanning the logged range."""
    for name in ("observations", "actions"):
        if name not in arrays:
            raise DataError(source, name, "missing")
    obs = np.asarray(arrays["observations"])
    observation_space = gym.spaces.Box(-np.inf, np.inf, shape=obs.shape[1:], dtype=np.float32)
    act = np.asarray(arrays["actions"])
    if act.size == 0:
        raise DataError(source, "actions", "no transitions: the data is empty")
    whole = act.dtype.kind in "biu" or (act.dtype.kind == "f" and np.all(np.isfinite(act)) and np.all(act == np.round(act)))
    if whole and (act.ndim == 1 or act.shape[1:] == (1,)) and act.min() >= 0:
        return observation_space, gym.spaces.Discrete(int(act.max()) + 1)
    low = np.nanmin(act, axis=0).astype(np.float32)
    high = np.nanmax(act, axis=0).astype(np.float32)
    return observation_space, gym.spaces.Box(low, high, dtype=np.float32)
