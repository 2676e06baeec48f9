"""``DreamEnv``: a learned world model as a ``gymnasium.Env`` (the batched core with one row).

## Spaces
Observation and action spaces are the source env's, read from the checkpoint.

## Dynamics
Each step draws one ensemble member at random and samples its Gaussian over ``[Δobs, reward]``
with noise scaled by ``temperature`` (0: no sampling, the ensemble mean). The next observation
is clipped to the bounds seen in the logged data; ``info["clipped_dims"]`` counts the clipped
dimensions. An action outside the action space raises ``ValueError``, as in the real env.

## Episode end
``terminated`` comes from the learned termination classifier (probability above 0.5);
``truncated`` from ``max_episode_steps`` given at registration (the TimeLimit wrapper).

## Starting state
``reset(seed=...)`` draws one of the logged episode starts through ``self.np_random``;
``reset(options={"initial_observation": obs})`` starts from ``obs``.

## Leaving the data
A predicted observation outside the bounds seen in the logged data is clipped; by default
(``out_of_bounds="halt"``) the episode also ends there, because beyond its data the model is a
guess an agent would exploit. ``halt_threshold`` ends it where the members disagree (MOReL);
``support_halt`` where the next observation is farther than that from any logged one.

## Info
``disagreement``: spread of the members' predicted next observations (data std units; -1 unless
``uncertainty_info=True`` or a halt or penalty needs it);
``penalty``: the uncertainty penalty subtracted from the reward; ``clipped_dims``: as above;
``halted``: the disagreement halt ended the episode; ``left_bounds``: leaving the data did.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from learned_envs.dreams.core import DreamCore
from learned_envs.dreams.render import DreamFrames, source_render_fps


class DreamEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, checkpoint: str, render_mode: str | None = None, **dream_kwargs: Any):
        """``dream_kwargs`` go to :class:`DreamCore` (``device``, ``temperature``, ``out_of_bounds``, ...)."""
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not supported; use one of {self.metadata['render_modes']}")
        self.core = DreamCore(checkpoint, num_envs=1, **dream_kwargs)
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self.render_mode = render_mode
        self.source_env_id: str | None = self.core.checkpoint.metadata.get("source_env_id")
        self.metadata = {**self.metadata, "render_fps": source_render_fps(self.source_env_id)}
        self._frames = DreamFrames(self.source_env_id)
        self._seeded = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None or not self._seeded:
            self.core.seed(self.np_random)
            self._seeded = True
        initial = (options or {}).get("initial_observation")
        if initial is not None and np.shape(initial) != self.observation_space.shape:
            raise ValueError(f"initial_observation must have shape {self.observation_space.shape}, got {np.shape(initial)}")
        return self.core.reset_rows(initial_observations=initial)[0], {}

    def step(self, action):
        batch = self.core.step(np.asarray(action)[None])
        return batch.observations[0], float(batch.rewards[0]), bool(batch.terminated[0]), bool(batch.truncated[0]), batch.info_row(0)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self._frames.draw(self.core.observations())[0]

    def close(self):
        self._frames.close()

