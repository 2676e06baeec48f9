"""A replay buffer for SB3's off-policy agents that mixes logged real transitions into every batch.

MOPO and MBPO train SAC on batches drawn mostly from model rollouts and partly (about 5%) from
the logged data, which anchors the critic where the model is least trusted. SB3's SAC takes a
``replay_buffer_class``, so the mix is a buffer, not a fork of SAC::

    from learned_envs.replay import MixedReplayBuffer
    SAC("MlpPolicy", dream_venv, replay_buffer_class=MixedReplayBuffer,
        replay_buffer_kwargs={"logged": transitions, "logged_fraction": 0.05})

Everything the agent collects (in the dream) goes into the ordinary ring buffer; each sampled
batch replaces ``round(logged_fraction * batch_size)`` of its rows by logged transitions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from learned_envs.data.transitions import Transitions


class MixedReplayBuffer(ReplayBuffer):
    """SB3's :class:`ReplayBuffer`, each sample a mix of the agent's transitions and logged ones.

    Args (beyond SB3's):
        logged: the real transitions (spaces must match the agent's).
        logged_fraction: share of each batch drawn from ``logged``, in ``[0, 1]``.
        seed: seed of the generator choosing the logged rows.

    A logged transition's ``done`` is its ``terminated`` flag: a truncation is bootstrapped, as
    SB3 does for the agent's own timeouts.
    """

    def __init__(self, buffer_size: int, observation_space: spaces.Space, action_space: spaces.Space,
                 device: torch.device | str = "auto", n_envs: int = 1, optimize_memory_usage: bool = False,
                 handle_timeout_termination: bool = True, *, logged: Transitions, logged_fraction: float = 0.05,
                 seed: int = 0):
        super().__init__(buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage,
                         handle_timeout_termination)
        if not 0.0 <= logged_fraction <= 1.0:
            raise ValueError(f"logged_fraction must be in [0, 1], got {logged_fraction}")
        if len(logged) == 0:
            raise ValueError("logged holds no transitions")
        for name, agent_space in (("observation", observation_space), ("action", action_space)):
            logged_space = getattr(logged, f"{name}_space")
            if logged_space.shape != agent_space.shape:
                raise ValueError(f"the logged data's {name} space {logged_space} does not match the agent's {agent_space}")
        n = len(logged)
        # Stored the way SB3 stores its own rows ([rows, *shape] in the buffer's dtypes), so a mixed
        # batch is one concatenation.
        self.logged_obs = logged.observations.reshape(n, *self.obs_shape).astype(self.observations.dtype)
        self.logged_next_obs = logged.next_observations.reshape(n, *self.obs_shape).astype(self.observations.dtype)
        self.logged_actions = np.asarray(logged.actions).reshape(n, self.action_dim).astype(self.actions.dtype)
        self.logged_rewards = np.asarray(logged.rewards, dtype=np.float32).reshape(n)
        self.logged_dones = np.asarray(logged.terminations, dtype=np.float32).reshape(n)
        self.logged_fraction = float(logged_fraction)
        self.rng = np.random.default_rng(seed)

    def sample(self, batch_size: int, env: Any = None) -> ReplayBufferSamples:
        """``batch_size`` rows: ``round(logged_fraction * batch_size)`` logged, the rest the agent's."""
        n_logged = int(round(self.logged_fraction * batch_size))
        own = super().sample(batch_size - n_logged, env=env) if n_logged < batch_size else None
        if n_logged == 0:
            return own
        rows = self.rng.integers(len(self.logged_obs), size=n_logged)
        logged = (
            self._normalize_obs(self.logged_obs[rows], env),
            self.logged_actions[rows],
            self._normalize_obs(self.logged_next_obs[rows], env),
            self.logged_dones[rows].reshape(-1, 1),
            self._normalize_reward(self.logged_rewards[rows].reshape(-1, 1), env),
        )
        logged_batch = ReplayBufferSamples(*(self.to_torch(part) for part in logged))
        if own is None:
            return logged_batch
        return ReplayBufferSamples(*(torch.cat([a, b]) for a, b in zip(own[:5], logged_batch[:5])))
