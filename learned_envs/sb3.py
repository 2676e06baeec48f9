"""stable-baselines3 faces of a registered dream.

``make_vec_env("Dream-CartPole-v0", n_envs=64)`` mirrors SB3's own ``make_vec_env`` but steps
all 64 dreams in one batched forward call instead of a Python loop over single envs.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from learned_envs.dreams.sb3 import DreamSB3VecEnv
from learned_envs.registry import ENTRY_POINT

__all__ = ["DreamSB3VecEnv", "make_vec_env"]


def make_vec_env(env_id: str, n_envs: int = 1, seed: int | None = None, **make_kwargs: Any) -> DreamSB3VecEnv:
    """An SB3 ``VecEnv`` of ``n_envs`` dreams of the registered dream ``env_id``.

    ``make_kwargs`` override the registered defaults (``temperature``, ``device``, ...) as in
    ``gym.make``; ``max_episode_steps`` overrides the registered time limit.
    """
    if ":" in env_id:  # "learned_envs:Dream-CartPole-v0", as gym.make accepts
        env_id = env_id.split(":", 1)[1]
    spec = gym.spec(env_id)
    if spec.entry_point != ENTRY_POINT:
        raise ValueError(f"{env_id} is not a learned-envs dream (entry point {spec.entry_point!r}); use SB3's make_vec_env for it")
    kwargs = {**spec.kwargs, **make_kwargs}
    kwargs.setdefault("max_episode_steps", spec.max_episode_steps)
    venv = DreamSB3VecEnv(num_envs=n_envs, **kwargs)
    if seed is not None:
        venv.seed(seed)
    return venv
