"""A replay buffer for SB3's off-policy agents that mixes logged real transitions into every batch.

MOPO and MBPO train SAC on batches drawn mostly from model rollouts and partly (about 5%) from
the logged data, which anchors the critic where the model is least trusted. SB3's SAC takes a
``replay_buffer_class``, so the mix is a buffer, not a fork of SAC::

    from learned_envs.replay import MixedReplayBuffer
    SAC("MlpPolicy", dream_venv, replay_buffer_class=MixedReplayBuffer,
        replay_buffer_kwargs={"logged": transitions, "logged_fraction": 0.05})

Everything the agent collects (in the dream) goes into the ordinary ring buffer; each sampled
batch replaces ``round(logged_fraction * batch_size)`` of its rows by logged transitions. With
``n_steps > 1`` the agent's rows carry SB3's n-step returns (its :class:`NStepReplayBuffer`:
the discounted sum of up to ``n_steps`` rewards, bootstrapped ``gamma ** k`` ahead), so that a
long-horizon critic (``gamma`` 0.999 over 1,000-step episodes) learns a fall's cost ``n_steps``
times faster; the logged rows stay single steps (a logged row's successor is not the agent's action).

:class:`BellmanPenaltyBuffer` adds MOBILE's pessimism to the same mix: each dream row pays the
spread of its Bellman target over the world model's members (it needs the agent's critics, bound
by the :class:`BindAgent` callback)::

    SAC("MlpPolicy", dream_venv, replay_buffer_class=BellmanPenaltyBuffer,
        replay_buffer_kwargs={"dream": {"checkpoint": "dream.safetensors"}, "value_penalty": 1.0,
                              "logged": transitions}).learn(600_000, callback=BindAgent())
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from learned_envs.data.sb3_buffer import scale_box_actions
from learned_envs.data.transitions import Transitions


class MixedReplayBuffer(NStepReplayBuffer):
    """SB3's replay buffer, each sample a mix of the agent's transitions and logged ones.

    Args (beyond SB3's):
        logged: the real transitions (spaces must match the agent's); ``None`` only with ``logged_fraction=0``.
        logged_fraction: share of each batch drawn from ``logged``, in ``[0, 1]``.
        seed: seed of the generator choosing the logged rows.
        n_steps, gamma: the agent's rows as n-step returns at discount ``gamma`` (SB3's
            :class:`NStepReplayBuffer`; give the agent's own gamma); 1 (the default): single steps,
            sampled exactly as SB3's plain :class:`ReplayBuffer` samples them.

    A logged transition's ``done`` is its ``terminated`` flag: a truncation is bootstrapped, as
    SB3 does for the agent's own timeouts.
    """

    def __init__(self, buffer_size: int, observation_space: spaces.Space, action_space: spaces.Space,
                 device: torch.device | str = "auto", n_envs: int = 1, optimize_memory_usage: bool = False,
                 handle_timeout_termination: bool = True, *, logged: Transitions | None, logged_fraction: float = 0.05,
                 seed: int = 0, n_steps: int = 1, gamma: float = 0.99):
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
            raise ValueError(f"n_steps must be a whole number >= 1, got {n_steps!r}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma (the discount factor) should be in (0, 1], not {gamma}")
        super().__init__(buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage,
                         handle_timeout_termination, n_steps=int(n_steps), gamma=float(gamma))
        if not 0.0 <= logged_fraction <= 1.0:
            raise ValueError(f"logged_fraction must be in [0, 1], got {logged_fraction}")
        self.logged_fraction = float(logged_fraction)
        self.rng = np.random.default_rng(seed)
        if logged is None:
            if logged_fraction > 0:
                raise ValueError(f"logged_fraction={logged_fraction} needs logged transitions (logged=None)")
            return
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
        actions = np.asarray(logged.actions).reshape(n, self.action_dim)
        if isinstance(action_space, spaces.Box):  # stored as SB3 stores its own rows, so must the logged ones be
            actions = scale_box_actions(actions, action_space)
        self.logged_actions = actions.astype(self.actions.dtype)
        self.logged_rewards = np.asarray(logged.rewards, dtype=np.float32).reshape(n)
        self.logged_dones = np.asarray(logged.terminations, dtype=np.float32).reshape(n)

    def _get_samples(self, batch_inds: np.ndarray, env: Any = None) -> ReplayBufferSamples:
        # One step: SB3's plain sampling, so that single-step runs draw what they drew before n-step returns.
        if self.n_steps == 1:
            return ReplayBuffer._get_samples(self, batch_inds, env)
        return super()._get_samples(batch_inds, env)

    def sample(self, batch_size: int, env: Any = None) -> ReplayBufferSamples:
        """``batch_size`` rows: ``round(logged_fraction * batch_size)`` logged, the rest the agent's
        (``discounts`` ``[B, 1]``, the bootstrap's discount of each row, where ``n_steps > 1``)."""
        n_logged = int(round(self.logged_fraction * batch_size))
        own = self.agent_rows(super().sample(batch_size - n_logged, env=env)) if n_logged < batch_size else None
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
        # A logged row is one real step: its bootstrap is one discount ahead.
        discounts = self.to_torch(np.full((n_logged, 1), self.gamma, dtype=np.float32)) if self.n_steps > 1 else None
        logged_batch = ReplayBufferSamples(*(self.to_torch(part) for part in logged), discounts=discounts)
        if own is None:
            return logged_batch
        mixed = ReplayBufferSamples(*(torch.cat([a, b]) for a, b in zip(own[:5], logged_batch[:5])))
        if discounts is None:
            return mixed
        return mixed._replace(discounts=torch.cat([own.discounts, discounts]))

    def agent_rows(self, rows: ReplayBufferSamples) -> ReplayBufferSamples:
        """The agent's own (dream) rows of a batch, as the batch will hold them: a hook for subclasses."""
        return rows


class BellmanPenaltyBuffer(MixedReplayBuffer):
    """MOBILE's penalty as a replay buffer: each dream row's reward, as a batch hands it to the
    critic, less ``value_penalty`` x the spread of its Bellman target over the world model's members.

    For a dream row ``(s, a)`` each member ``m`` predicts its own next observation ``s'_m``,
    reward ``r_m`` and end ``d_m`` (:meth:`DreamCore.member_outcomes`); the agent's actor samples
    ``a'_m`` at ``s'_m`` and its target critics value it (the smallest of them, as SAC's target
    does), and the penalty is ``value_penalty * std_m(r_m + gamma (1 - d_m) Q'(s'_m, a'_m))``.
    Subtracting it from the reward subtracts it from the critic's target
    ``r + gamma (1 - done) Q'`` exactly, so SB3's SAC/TD3/DDPG train on it unchanged. Unlike a
    penalty on the model's own spread (MOPO's, a dream knob), it is measured in the critic's
    currency: where the members disagree about whether a gait falls or earns, the value pays, even
    when their next states lie close together. Logged rows (``logged_fraction``) are real and
    pay nothing.

    The penalty stops at a floor under the target, as MOBILE clamps its target at 0: the reward
    becomes ``max(r - penalty, min(r, floor - gamma (1 - done) V'(s')))``, ``V'`` the target
    critics' value of the row's own next state under a sampled action (SAC's target samples its
    own, so the floor holds up to that sampling). ``"auto"`` floors at ``min(0, r_min / (1 - gamma))``, ``r_min`` the smallest
    logged reward: no policy's value lies below it where rewards stay above ``r_min`` (0: an episode
    that ends earns nothing more). Without it the penalty feeds on itself: a penalty that drives
    values negative widens their spread, which raises the penalty (a cloned Hopper actor's critic
    reached -500 at a penalty of 50 a step, and the agent learned to fall at once).

    Args (beyond :class:`MixedReplayBuffer`'s; ``logged`` may be ``None`` with ``logged_fraction=0``):
        dream: the :class:`~learned_envs.dreams.core.DreamCore` whose members are asked, or the
            arguments of one (``{"checkpoint": PATH, **knobs}``); its support box and end rules
            are the training dream's.
        value_penalty: the coefficient (MOBILE: 0.1-1.5 on D4RL's locomotion data).
        target_floor: a number, ``"auto"`` (needs ``logged``) or ``None`` (no floor).

    The buffer needs the agent that samples it: :class:`BindAgent` (an SB3 callback) binds it when
    training starts, ``buffer.bind(agent)`` by hand. ``last_penalty`` holds the latest batch's mean
    penalty; the callback logs it as ``train/value_penalty``.
    """

    def __init__(self, buffer_size: int, observation_space: spaces.Space, action_space: spaces.Space,
                 device: torch.device | str = "auto", n_envs: int = 1, optimize_memory_usage: bool = False,
                 handle_timeout_termination: bool = True, *, dream: Any, value_penalty: float,
                 target_floor: float | str | None = "auto", logged: Transitions | None = None,
                 logged_fraction: float = 0.05, seed: int = 0):
        from learned_envs.dreams.core import DreamCore

        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"a Bellman penalty values sampled next actions: a Box action space, not {action_space}")
        if not (np.isfinite(value_penalty) and value_penalty >= 0):
            raise ValueError(f"value_penalty must be a finite number >= 0, got {value_penalty}")
        super().__init__(buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage,
                         handle_timeout_termination, logged=logged, logged_fraction=logged_fraction, seed=seed)
        self.dream = dream if isinstance(dream, DreamCore) else DreamCore(**dream)
        if self.dream.observation_space.shape != observation_space.shape or self.dream.action_space.shape != action_space.shape:
            raise ValueError(f"the dream's spaces ({self.dream.observation_space}, {self.dream.action_space}) do not match "
                             f"the agent's ({observation_space}, {action_space})")
        if self.dream.model.num_members < 2:
            raise ValueError(f"a Bellman penalty is a spread over the model's members; {self.dream.checkpoint.path} has "
                             f"{self.dream.model.num_members}")
        self.value_penalty = float(value_penalty)
        if target_floor == "auto":
            if logged is None:
                raise ValueError("target_floor='auto' reads the smallest logged reward: give logged transitions, or a number")
            self._reward_min: float | None = float(np.min(logged.rewards))
        elif target_floor is not None and not (isinstance(target_floor, (int, float)) and np.isfinite(target_floor)):
            raise ValueError(f"target_floor must be a finite number, 'auto' or None, got {target_floor!r}")
        self._target_floor = target_floor
        self._low = torch.as_tensor(action_space.low, dtype=torch.float32).reshape(-1)
        self._high = torch.as_tensor(action_space.high, dtype=torch.float32).reshape(-1)
        self.agent: Any = None
        self.last_penalty = float("nan")

    def bind(self, agent: Any) -> None:
        """Use ``agent``'s actor and target critics (SB3's SAC, TD3 or DDPG) for the penalty."""
        if not hasattr(agent.policy, "critic_target"):
            raise ValueError(f"a Bellman penalty needs target critics (SAC, TD3, DDPG), not {type(agent).__name__}")
        self.agent = agent

    @property
    def target_floor(self) -> float | None:
        """The floor in force (``"auto"`` resolved with the bound agent's gamma)."""
        if self._target_floor != "auto":
            return self._target_floor
        if self.agent is None:
            return None
        return min(0.0, self._reward_min / (1.0 - self.agent.gamma))

    def _value(self, obs: torch.Tensor) -> torch.Tensor:
        """``[N]``: the smaller target critic's value of ``obs [N, *obs_shape]`` under an action the actor samples."""
        policy = self.agent.policy
        return torch.cat(policy.critic_target(obs, policy.actor(obs)), dim=1).min(dim=1).values

    @torch.no_grad()
    def bellman_spread(self, obs: torch.Tensor, scaled_actions: torch.Tensor) -> torch.Tensor:
        """``[B]``: the std over members of ``r_m + gamma (1 - d_m) Q'(s'_m, a'_m)`` for ``obs [B, D]`` and
        actions ``[B, A]`` as the buffer stores them (scaled to [-1, 1])."""
        if self.agent is None:
            raise RuntimeError("BellmanPenaltyBuffer: bind the agent first (callback=BindAgent(), or buffer.bind(agent))")
        action = self._low + (scaled_actions.reshape(len(obs), -1).float() + 1.0) * (0.5 * (self._high - self._low))
        nxt, reward, ended = self.dream.member_outcomes(obs.reshape(len(obs), -1), action)  # [M, B, D], [M, B], [M, B]
        members, batch = reward.shape
        # SAC's actor samples the next action; TD3's and DDPG's act deterministically.
        value = self._value(nxt.reshape(members * batch, *self.obs_shape).to(self.device, torch.float32))
        value = value.reshape(members, batch)
        target = reward.to(value) + self.agent.gamma * (1.0 - ended.to(value)) * value
        return target.std(dim=0)

    def agent_rows(self, rows: ReplayBufferSamples) -> ReplayBufferSamples:
        penalty = self.value_penalty * self.bellman_spread(rows.observations, rows.actions).reshape(-1, 1)
        rewards = rows.rewards - penalty
        floor = self.target_floor
        if floor is not None:
            with torch.no_grad():
                ahead = self.agent.gamma * (1.0 - rows.dones) * self._value(rows.next_observations).reshape(-1, 1)
            rewards = torch.maximum(rewards, torch.minimum(rows.rewards, floor - ahead))
        self.last_penalty = float((rows.rewards - rewards).mean())
        return rows._replace(rewards=rewards)


class BindAgent(BaseCallback):
    """Binds a :class:`BellmanPenaltyBuffer` to the agent that samples it, when training starts."""

    def _on_training_start(self) -> None:
        self.model.replay_buffer.bind(self.model)

    def _on_step(self) -> bool:
        penalty = self.model.replay_buffer.last_penalty
        if np.isfinite(penalty):  # NaN until the first gradient step
            self.logger.record_mean("train/value_penalty", penalty)
        return True
