"""stable-baselines3 faces of a registered dream.

``make_vec_env("Dream-CartPole-v0", n_envs=64)`` mirrors SB3's own ``make_vec_env`` but steps
all 64 dreams in one batched forward call instead of a Python loop over single envs.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

from learned_envs.dreams.sb3 import DreamSB3VecEnv
from learned_envs.registry import ENTRY_POINT

__all__ = ["DreamSB3VecEnv", "make_vec_env"]


def make_vec_env(
    env_id: str,
    n_envs: int = 1,
    seed: int | None = None,
    monitor: bool = True,
    monitor_dir: str | None = None,
    **make_kwargs: Any,
) -> VecEnv:
    """An SB3 ``VecEnv`` of ``n_envs`` dreams of the registered dream ``env_id``.

    ``make_kwargs`` override the registered defaults (``temperature``, ``device``, ...) as in
    ``gym.make``; ``max_episode_steps`` overrides the registered time limit. As SB3's
    ``make_vec_env`` wraps every env in ``Monitor`` (so algorithms log ``ep_rew_mean`` and
    ``evaluate_policy`` counts whole episodes), this wraps the batch in a ``VecMonitor``
    (writing to ``monitor_dir`` if given) unless ``monitor=False``; the
    :class:`DreamSB3VecEnv` itself is ``venv.unwrapped``.
    """
    if ":" in env_id:  # "learned_envs:Dream-CartPole-v0", as gym.make accepts
        env_id = env_id.split(":", 1)[1]
    spec = gym.spec(env_id)
    if spec.entry_point != ENTRY_POINT:
        raise ValueError(f"{env_id} is not a learned-envs dream (entry point {spec.entry_point!r}); use SB3's make_vec_env for it")
    kwargs = {**spec.kwargs, **make_kwargs}
    kwargs.setdefault("max_episode_steps", spec.max_episode_steps)
    venv: VecEnv = DreamSB3VecEnv(num_envs=n_envs, **kwargs)
    if seed is not None:
        venv.seed(seed)
        venv.action_space.seed(seed)  # as SB3's make_vec_env seeds each env's action space
    if monitor:
        if monitor_dir is not None:
            os.makedirs(monitor_dir, exist_ok=True)  # VecMonitor writes monitor.csv inside an existing folder
        venv = VecMonitor(venv, filename=monitor_dir)
    return venv
