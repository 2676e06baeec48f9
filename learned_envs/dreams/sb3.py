"""``DreamSB3VecEnv``: the batched core as a stable-baselines3 ``VecEnv``.

N dreams step in one forward call, where SB3's ``DummyVecEnv`` would loop over N single envs in
Python. SB3's conventions hold: a done row resets in the same step, its last observation is in
``infos[i]["terminal_observation"]``, and ``infos[i]["TimeLimit.truncated"]`` marks time-limit ends.
Sub-dreams share one set of attributes: ``get_attr`` returns the same value for every index and
``set_attr`` changes all of them.
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from learned_envs.dreams.core import DreamCore


class DreamSB3VecEnv(VecEnv):
    def __init__(
        self,
        checkpoint: str,
        num_envs: int = 1,
        max_episode_steps: int | None = None,
        device: str = "cpu",
        temperature: float | None = None,
        render_mode: str | None = None,
    ):
        self.core = DreamCore(checkpoint, num_envs=num_envs, device=device, temperature=temperature, max_episode_steps=max_episode_steps)
        super().__init__(num_envs, self.core.observation_space, self.core.action_space)
        self.render_mode = render_mode
        self.source_env_id = self.core.checkpoint.metadata.get("source_env_id")
        self._np_random: np.random.Generator | None = None
        self._actions: np.ndarray | None = None
        self._renderer = None

    @property
    def temperature(self) -> float:
        return self.core.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.core.temperature = float(value)

    def reset(self) -> np.ndarray:
        seed = self._seeds[0]
        if seed is not None or self._np_random is None:
            self._np_random = np.random.default_rng(seed)
            self.core.seed(self._np_random)
        initial = [opts.get("initial_observation") for opts in self._options]
        if all(obs is not None for obs in initial):
            self.core.reset_rows(initial_observations=np.stack(initial))
        elif any(obs is not None for obs in initial):
            raise ValueError("set_options: give initial_observation to every sub-dream or to none")
        else:
            self.core.reset_rows()
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self.core.observations()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        batch = self.core.step(self._actions)
        dones = batch.terminated | batch.truncated
        infos: list[dict[str, Any]] = [
            {"disagreement": float(d), "clipped_dims": int(c), "TimeLimit.truncated": bool(t)}
            for d, c, t in zip(batch.disagreement, batch.clipped_dims, batch.truncated)
        ]
        obs = batch.observations
        if dones.any():
            done_rows = np.flatnonzero(dones)
            for i in done_rows:
                infos[i]["terminal_observation"] = obs[i]
            mask = self.core.state.new_zeros(self.num_envs, dtype=bool)
            mask[done_rows.tolist()] = True
            self.core.reset_rows(mask)
            obs = obs.copy()
            obs[done_rows] = self.core.observations(mask)
        return obs, batch.rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- rendering -------------------------------------------------------------------------
    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        if self._renderer is None:
            from learned_envs.dreams.render import SourceRenderer

            self._renderer = SourceRenderer(self.source_env_id)
        return [self._renderer.render(obs) for obs in self.core.observations()]

    # -- attribute plumbing (one shared set of attributes) --------------------------------
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
