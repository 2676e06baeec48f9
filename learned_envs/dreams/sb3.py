"""``DreamSB3VecEnv``: the batched core as a stable-baselines3 ``VecEnv``.

N dreams step in one forward call, where SB3's ``DummyVecEnv`` would loop over N single envs in
Python. SB3's conventions hold, as ``DummyVecEnv`` keeps them: a done row resets in the same step,
its last observation is in ``infos[i]["terminal_observation"]``, and
``infos[i]["TimeLimit.truncated"]`` is true for time-limit ends that are not also terminations.

Sub-dreams share one set of attributes: ``get_attr`` returns the same value for every index,
``set_attr`` changes all of them, and ``env_method`` calls the method once and repeats its result
(except ``reset``, which restarts just the dreams in ``indices``).
The dream's knobs (:class:`~learned_envs.dream_settings.DreamSettings`: ``temperature``,
``propagation``, ...) are attributes too: ``venv.set_attr("temperature", 0.5)`` applies from the
next step.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from learned_envs.dream_settings import check_max_episode_steps
from learned_envs.dreams.autoreset import restart_rows
from learned_envs.dreams.core import DreamCore, StepBatch
from learned_envs.dreams.render import DreamFrames, source_render_fps
from learned_envs.dreams.vector import require_started


def sb3_infos(batch: StepBatch) -> list[dict[str, Any]]:
    """One info dict per row: the core's info keys as Python scalars plus ``"TimeLimit.truncated"``.

    Columns go through ``tolist()`` once rather than ``.item()`` per row and key (4096 rows x 4
    keys of ``.item()`` cost milliseconds per step).
    """
    keys = list(batch.info)
    columns = [batch.info[key].tolist() for key in keys]
    time_limit = (batch.truncated & ~batch.terminated).tolist()
    infos = [dict(zip(keys, values)) for values in zip(*columns)] if keys else [{} for _ in time_limit]
    for info, flag in zip(infos, time_limit):
        info["TimeLimit.truncated"] = flag
    return infos


class DreamSB3VecEnv(VecEnv):
    """``num_envs`` dreams of ``checkpoint`` as an SB3 ``VecEnv``.

    ``dream_kwargs`` go to :class:`DreamCore` (``max_episode_steps``, ``device``, ``temperature``, ...).
    Observations are ``[N, *obs_shape]``, rewards ``[N]`` float32, dones ``[N]`` bool.
    """

    def __init__(self, checkpoint: Any, num_envs: int = 1, render_mode: str | None = None, **dream_kwargs: Any):
        check_max_episode_steps(dream_kwargs.get("max_episode_steps"))
        self.core = DreamCore(checkpoint, num_envs=num_envs, **dream_kwargs)
        self._started = np.zeros(num_envs, dtype=np.bool_)  # rows reset at least once
        # Before VecEnv.__init__, which reads it through get_attr (and warns when it is missing).
        self.render_mode = render_mode
        super().__init__(num_envs, self.core.observation_space, self.core.action_space)
        self.source_env_id = self.core.checkpoint.metadata.get("source_env_id")
        # An instance copy with the source env's frame rate, which VecVideoRecorder reads.
        self.metadata = {**self.metadata, "render_fps": source_render_fps(self.source_env_id)}
        self._np_random: np.random.Generator | None = None
        self._actions: np.ndarray | None = None
        self._frames = DreamFrames(self.source_env_id)

    @property
    def temperature(self) -> float:
        return self.core.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.core.temperature = value

    def reset(self) -> np.ndarray:
        """Reset every dream; the seed given to :meth:`seed` (its first entry) applies here once."""
        seed = self._seeds[0]
        if seed is not None or self._np_random is None:
            self._np_random = np.random.default_rng(seed)
            self.core.seed(self._np_random)
        initial = [opts.get("initial_observation") for opts in self._options]
        if all(obs is not None for obs in initial):
            obs = self.core.reset_rows(initial_observations=np.stack(initial))
        elif any(obs is not None for obs in initial):
            raise ValueError("set_options: give initial_observation to every sub-dream or to none")
        else:
            obs = self.core.reset_rows()
        self._started[:] = True
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        require_started(self._started, "DreamSB3VecEnv.step")
        batch = self.core.step(self._actions)
        dones = batch.terminated | batch.truncated
        infos = sb3_infos(batch)
        obs = batch.observations
        if dones.any():
            # Copies: restart_rows overwrites these rows of obs in place.
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = obs[i].copy()
                self.reset_infos[i] = {}
            restart_rows(self.core, obs, dones)
        return obs, batch.rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self._frames.close()

    # -- rendering -------------------------------------------------------------------------
    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        return self._frames.draw(self.core.observations())

    # -- attribute plumbing (one shared set of attributes) --------------------------------
    def _is_setting(self, name: str) -> bool:
        return name in {f.name for f in fields(self.core.settings)}

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.core.settings, attr_name) if self._is_setting(attr_name) else getattr(self, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if self._is_setting(attr_name):
            updated = replace(self.core.settings, **{attr_name: value})
            updated.validate()  # before it replaces the settings in force, so a bad value changes nothing
            self.core.settings = updated
        else:
            setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """``reset`` restarts only the dreams in ``indices`` and returns ``(obs, {})`` for each, as
        ``DummyVecEnv`` over single envs does; any other method runs once (the sub-dreams are one
        object, and a side effect must not happen N times) and its result is repeated."""
        rows = list(self._get_indices(indices))
        if method_name == "reset":
            return self._reset_sub_dreams(rows, *method_args, **method_kwargs)
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result for _ in rows]

    def _reset_sub_dreams(
        self, rows: list[int], seed: int | None = None, options: dict[str, Any] | None = None
    ) -> list[tuple[np.ndarray, dict]]:
        if seed is not None:
            self._np_random = np.random.default_rng(seed)
            self.core.seed(self._np_random)
        mask = np.zeros(self.num_envs, dtype=np.bool_)
        mask[rows] = True
        first = self.core.reset_rows(mask, (options or {}).get("initial_observation"))
        self._started[mask] = True
        return [(obs, {}) for obs in first]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
