"""The batched step core every dream face shares (single env, Gymnasium vector env, SB3 VecEnv).

It holds N dream states on one torch device, steps them all with one world-model forward call,
and crosses to numpy once per step. Faces decide only how results are packaged and when rows
are reset; every knob lives here, so it works the same through every face.

Shapes: N = number of dreams, D = flat observation size, E = ensemble members.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from learned_envs.checkpoint import Checkpoint, load_checkpoint
from learned_envs.dream_settings import DreamSettings
from learned_envs.dreams.support import LoggedSupport
from learned_envs.models.array_ops import NumpyOps, TorchOps


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` means CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def clip_to_bounds(raw: Any, low: Any, high: Any) -> tuple[Any, Any]:
    """``raw [N, D]`` (tensor or array) clipped to ``low``/``high`` ``[D]``, and the number of
    clipped dimensions per row ``[N]``."""
    ops = NumpyOps if isinstance(raw, np.ndarray) else TorchOps
    clipped = ops.clip(raw, low, high)
    return clipped, (clipped != raw).sum(-1)


# Immutable Python values: a dict of only these is deep-copied by copying the dict.
_SCALARS = (bool, int, float, str, type(None))


class StepInfo(dict):
    """One dream's step info (``str -> Python scalar``): a plain ``dict`` that deep-copies cheaply.

    SB3's ``DummyVecEnv`` deep-copies every env's info on every step; the generic ``deepcopy``
    walks each scalar through its memo bookkeeping: 5.7 us a dream a step against 2.6 us for this
    copy (CartPole's own empty info: 1.3 us), measured on a loaded core. A copy of the dict is
    already deep for scalars; anything else put in it (SB3's ``terminal_observation`` array) is
    still deep-copied.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> StepInfo:
        copied = StepInfo(self)
        memo[id(self)] = copied
        for key, value in self.items():
            if type(value) not in _SCALARS:
                copied[key] = copy.deepcopy(value, memo)
        return copied


@dataclass
class StepBatch:
    """One step of N dreams, as numpy: what every face needs to build its return value.

    ``info`` maps each per-dream info key to an ``[N]`` array; faces package it their own way
    (a dict of scalars, Gymnasium's dict of arrays, SB3's list of dicts), so a key added here
    reaches every face.
    """

    observations: np.ndarray  # [N, *obs_shape] in the observation space's dtype
    rewards: np.ndarray  # [N] float64
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray  # [N] bool
    # disagreement [N] f32, penalty [N] f32 (as applied), clipped_dims [N] i64,
    # halted [N] bool (the disagreement halt fired), left_bounds [N] bool (ended outside the data's
    # bounds, or beyond support_halt from the nearest logged observation)
    info: dict[str, np.ndarray]

    def info_row(self, i: int) -> StepInfo:
        """Row ``i``'s info as Python scalars."""
        return StepInfo({key: value[i].item() for key, value in self.info.items()})


class DreamCore:
    """N dreams stepped together.

    Args:
        checkpoint: a loaded :class:`Checkpoint` or a path to one.
        num_envs: N.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a torch device.
        max_episode_steps: per-row truncation; ``None`` leaves time limits to a wrapper.
        **settings: the :class:`DreamSettings` knobs.
    """

    def __init__(
        self,
        checkpoint: Checkpoint | str,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = None,
        **settings: Any,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.device = resolve_device(device)
        if not isinstance(checkpoint, Checkpoint):
            checkpoint = load_checkpoint(checkpoint, device=str(self.device))
        self.checkpoint = checkpoint
        self.model = checkpoint.model.to(self.device)
        self.observation_space: gym.spaces.Box = checkpoint.observation_space
        self.action_space: gym.Space = checkpoint.action_space
        self.num_envs = num_envs
        self._support: LoggedSupport | None = None  # built by the settings setter when a support halt first asks
        self.settings = DreamSettings.resolve(checkpoint.metadata.get("dream", {}), settings)
        self.max_episode_steps = max_episode_steps
        self.obs_shape = self.observation_space.shape
        self.obs_dtype = self.observation_space.dtype
        self.discrete = isinstance(self.action_space, gym.spaces.Discrete)
        self.action_start = int(self.action_space.start) if self.discrete else 0
        if self.discrete:
            self._action_end = self.action_start + int(self.action_space.n)
        else:
            self._action_size = int(np.prod(self.action_space.shape))
        if not self.discrete:
            self.action_low = self.action_space.low.reshape(-1).astype(np.float32)
            self.action_high = self.action_space.high.reshape(-1).astype(np.float32)
        self.generator = torch.Generator(device=self.device)
        self.host_rng = np.random.default_rng(0)  # replaced by seed(); until then as fixed as torch's default
        # [N, S] model states (the observation itself for state-space families); set by reset_rows.
        self.state = self.model.encode(torch.zeros(num_envs, self.obs_low.shape[0], device=self.device))
        self.elapsed = np.zeros(num_envs, dtype=np.int64)  # steps since reset, on the host (truncation is decided there)
        self.members = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        # One dream on the CPU steps in numpy (same math, same draws): torch's per-operation
        # overhead, ~50 operations a step, costs more than the arithmetic of a batch of one.
        self.host = (self.device.type == "cpu" and num_envs == 1 and self.model.predict_host is not None
                     and self.state.dtype == torch.float32)
        self._host_state_of: torch.Tensor | None = None  # the tensor self._host_state views
        # One model call now: what a model reads of its own weights once (the ensemble's serving
        # flags: is the classifier on, do end rules stand) is read here, not in the first step, so
        # every step crosses from the device to the host exactly once.
        warm_action = torch.zeros(1, dtype=torch.long) if self.discrete else torch.zeros(1, self._action_size)
        self.model.predict(self.state[:1], warm_action.to(self.device), temperature=0.0, members="mean")

    @property
    def temperature(self) -> float:
        return self.settings.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.settings = dataclasses.replace(self.settings, temperature=float(value))

    @property
    def settings(self) -> DreamSettings:
        return self._settings

    @settings.setter
    def settings(self, value: DreamSettings) -> None:
        value.validate()
        # Derived once here, not on every step.
        self._halt_threshold = self._resolve_halt_threshold(value)
        self._penalty_threshold = (self._recorded_quantile("train_disagreement_quantiles", value.penalty_quantile,
                                                           "penalty_threshold", "penalty_quantile")
                                   if value.penalty_threshold == "auto" else float(value.penalty_threshold))
        self._penalty_column = 0 if value.penalty_of == "disagreement" else 1  # of _predict's (disagreement, model std)
        self._uncertainty = value.uncertainty_info or value.uncertainty_penalty > 0 or self._halt_threshold is not None
        self.obs_low, self.obs_high = (b.to(self.device) for b in self.checkpoint.bounds(value.bounds_margin))
        if getattr(self, "_settings", None) is None or value.reset_from != self._settings.reset_from:
            # [S, D] the reset pool, kept on the host: resets are decided there, without a device round trip.
            self.start_states: np.ndarray = self._reset_pool(value.reset_from)
        # [S0, D] the logged episode starts a share of "logged" resets draws from; None when no share is asked.
        self._episode_starts = (self._reset_pool("starts") if value.reset_from == "logged" and value.start_share > 0
                                else None)
        self._obs_low_host, self._obs_high_host = (b.cpu().numpy() for b in (self.obs_low, self.obs_high))
        self._support_halt = (value.support_factor * self._recorded_quantile(
            "support_distance_quantiles", value.support_quantile, "support_halt", "support_quantile")
            if value.support_halt == "auto" else value.support_halt)
        if self._support_halt is not None and self._support is None:
            self._support = LoggedSupport(self._reset_pool("logged", "support_halt"))
        self._settings = value

    def _reset_pool(self, reset_from: str, needed_by: str = "reset_from='logged'") -> np.ndarray:
        """``[S, D]``: the logged episode starts, or (``"logged"``) the fit's sample of every logged state
        (an error naming ``needed_by`` if the dream stores none)."""
        if reset_from == "starts":
            return self.checkpoint.start_states.detach().cpu().numpy()
        if self.checkpoint.reset_states is None:
            raise ValueError(f"{self.checkpoint.path}: {needed_by} needs logged states, which this dream does not "
                             "store; refit it with `learned-envs fit ... --reset-states N` (or --preset offline)")
        return self.checkpoint.reset_states.detach().cpu().numpy()

    @property
    def halt_threshold(self) -> float | None:
        """The disagreement threshold in force (``"auto"`` resolved from the fit's record)."""
        return self._halt_threshold

    def _resolve_halt_threshold(self, settings: DreamSettings) -> float | None:
        threshold = settings.halt_threshold
        if threshold == "auto":
            return settings.halt_factor * self._recorded_quantile("train_disagreement_quantiles", settings.halt_quantile,
                                                                  "halt_threshold", "halt_quantile")
        return None if threshold is None else float(threshold)

    @property
    def support_halt(self) -> float | None:
        """The neighbour distance in force for ``support_halt`` (``"auto"`` resolved from the fit's record)."""
        return self._support_halt

    @property
    def penalty_threshold(self) -> float:
        """The penalty's threshold in force (``"auto"`` resolved from the fit's record)."""
        return self._penalty_threshold

    def _recorded_quantile(self, record: str, quantile: float, knob: str, quantile_knob: str) -> float:
        """The ``quantile`` of a fit metric ``record`` (``{"q": value}``: the training rows'
        disagreement, the logged states' neighbour distances), interpolated between the recorded
        levels; errors name the knobs (``knob="auto"`` at ``quantile_knob``) that asked for it."""
        metrics = self.checkpoint.metadata.get("fit", {}).get("metrics", {})
        if record == "train_disagreement_quantiles" and quantile == 1.0 and metrics.get("max_train_disagreement") is not None:
            return float(metrics["max_train_disagreement"])
        recorded = metrics.get(record)
        if recorded is None:
            raise ValueError(f"{self.checkpoint.path}: {knob}='auto' at {quantile_knob}={quantile} needs the fit's "
                             f"record of {record}, which this checkpoint lacks (refit it)")
        levels = sorted((float(q), float(v)) for q, v in recorded.items())
        if not levels[0][0] <= quantile <= levels[-1][0]:
            raise ValueError(f"{self.checkpoint.path}: {quantile_knob}={quantile} is outside the quantiles the fit recorded "
                             f"({levels[0][0]} to {levels[-1][0]})")
        return float(np.interp(quantile, [q for q, _ in levels], [v for _, v in levels]))

    # -- randomness ------------------------------------------------------------------------
    def seed(self, np_random: np.random.Generator) -> None:
        """Seed from a face's ``np_random``, the only source of randomness: the torch generator
        (model noise and per-step members, on the device) and a numpy one (start states and
        per-episode members, drawn on the host so that a reset needs no device round trip; and
        every per-step draw of a single CPU dream, which steps in numpy)."""
        self.generator.manual_seed(int(np_random.integers(2**62)))
        self.host_rng = np.random.default_rng(int(np_random.integers(2**62)))

    # -- resets ----------------------------------------------------------------------------
    def reset_rows(self, rows: np.ndarray | None = None, initial_observations: np.ndarray | None = None) -> np.ndarray:
        """Start new episodes in ``rows`` (``[N]`` bool mask; ``None`` = all) from logged starts,
        or from ``initial_observations [R or 1, *obs_shape]`` (one per reset row, or one for all).

        Returns the R first observations ``[R, *obs_shape]`` in the space's dtype. Everything is
        decided on the host and copied to the device, so no reset waits for the device.
        """
        index = np.arange(self.num_envs) if rows is None else np.flatnonzero(rows)
        count = index.size
        if count == 0:
            return np.empty((0, *self.obs_shape), dtype=self.obs_dtype)
        if initial_observations is not None:
            starts = self._checked_initial_observations(initial_observations, count)
        else:
            starts = self.start_states[self.host_rng.integers(self.start_states.shape[0], size=count)]
            if self._episode_starts is not None:
                from_start = self.host_rng.random(count) < self.settings.start_share
                picks = self.host_rng.integers(self._episode_starts.shape[0], size=int(from_start.sum()))
                starts[from_start] = self._episode_starts[picks]
        rows_t = torch.as_tensor(index, device=self.device)
        self.state[rows_t] = self.model.encode(torch.as_tensor(starts.reshape(count, -1), dtype=self.state.dtype, device=self.device))
        self.elapsed[index] = 0
        if self.settings.propagation == "fixed":
            members = self.host_rng.integers(self.model.num_members, size=count)
            self.members[rows_t] = torch.as_tensor(members, device=self.device)
        return starts.astype(self.obs_dtype, copy=True).reshape(count, *self.obs_shape)

    def _checked_initial_observations(self, initial: np.ndarray, count: int) -> np.ndarray:
        """``initial`` as ``[count, D]``, each row inside the observation space (every face's check)."""
        space = self.observation_space
        obs = np.asarray(initial, dtype=np.float64).reshape(-1, self.obs_low.shape[0])
        if obs.shape[0] == 1:
            obs = np.repeat(obs, count, axis=0)
        elif obs.shape[0] != count:
            raise ValueError(f"initial_observation: got {obs.shape[0]} observations for {count} resetting dreams")
        inside = np.isfinite(obs) & (obs >= space.low.reshape(1, -1)) & (obs <= space.high.reshape(1, -1))
        outside = np.flatnonzero(~inside.all(axis=1))
        if outside.size:
            row = int(outside[0])
            raise ValueError(f"initial_observation row {row} {obs[row].tolist()} is outside the observation space {space}")
        return obs

    def observations(self) -> np.ndarray:
        """Current observations ``[N, *obs_shape]`` as numpy in the space's dtype."""
        # A copy: on CPU .numpy() shares memory with the state that the next step overwrites.
        return np.array(self.model.decode(self.state).cpu().numpy(), dtype=self.obs_dtype, copy=True).reshape(-1, *self.obs_shape)

    # -- stepping --------------------------------------------------------------------------
    def _checked_actions(self, actions: Any) -> np.ndarray:
        """``actions`` (``[N]`` Discrete, ``[N, *act_shape]`` Box) checked on the host: ``[N]`` int64
        indices from 0, or ``[N, A]`` float32 clipped to the space (as Pendulum and
        MountainCarContinuous clip).

        A real env rejects an action outside its space; so does the dream, naming the first bad
        row (on CUDA a bad index would otherwise surface as a device-side assert).
        """
        action = np.asarray(actions)
        if self.discrete:
            if action.size != self.num_envs:
                raise ValueError(f"expected {self.num_envs} action(s) for {self.action_space}, got shape {action.shape}")
            action = action.reshape(self.num_envs)
            # Two comparisons, not np.isin: this runs on every step of every dream.
            bad = (action < self.action_start) | (action >= self._action_end)
            if action.dtype.kind == "f":
                bad |= action != np.floor(action)  # 1.7 is no action; NaN fails this too
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(f"action {action[row]!r} in row {row} is not in the action space {self.action_space}")
            index = action.astype(np.int64, copy=False)
            return index - self.action_start if self.action_start else index
        if action.size != self.num_envs * self._action_size:
            raise ValueError(f"expected actions of shape ({self.num_envs}, *{self.action_space.shape}) for {self.action_space}, "
                             f"got {action.shape}")
        action = action.reshape(self.num_envs, -1)
        if not np.isfinite(action).all():
            row = int(np.flatnonzero(~np.isfinite(action).all(axis=1))[0])
            raise ValueError(f"action {action[row].tolist()} in row {row} is not finite")
        return np.clip(action.astype(np.float32, copy=False), self.action_low, self.action_high)

    def _predict(self, actions: Any) -> tuple[np.ndarray, ...]:
        """One model step of every dream, the state advanced to the clipped next observations.

        Returns numpy columns ``[N]`` (``observations [N, D]``): observations, reward, termination
        probability, clipped dimensions, then disagreement and model std where computed.
        """
        s = self.settings
        members = {"random": None, "fixed": self.members, "mean": "mean"}[s.propagation]
        if members is None and s.temperature == 0:
            members = "mean"  # temperature 0 samples nothing per step, the member draw included
        action = self._checked_actions(actions)
        return self._predict_host(action, members) if self.host else self._predict_device(action, members)

    def _predict_host(self, action: np.ndarray, members: torch.Tensor | str | None) -> tuple[np.ndarray, ...]:
        """:meth:`_predict` of a single CPU dream, in numpy (``predict_host``)."""
        if self._host_state_of is not self.state:  # a view of self.state, written in place below
            self._host_state, self._host_state_of = self.state.numpy(), self.state
        state = self._host_state
        out = self.model.predict_host(state, action, generator=self.host_rng, temperature=self.settings.temperature,
                                      members=members.numpy() if isinstance(members, torch.Tensor) else members,
                                      uncertainty=self._uncertainty)
        nxt, clipped = clip_to_bounds(out.next_state, self._obs_low_host, self._obs_high_host)
        state[:] = nxt
        extra = () if out.disagreement is None else (out.disagreement, out.model_std)
        return (nxt, out.reward, out.termination_prob, clipped, *extra)

    def _predict_device(self, action: np.ndarray, members: torch.Tensor | str | None) -> tuple[np.ndarray, ...]:
        """:meth:`_predict` of N dreams on the core's device, with one device->host crossing."""
        out = self.model.predict(self.state, torch.as_tensor(action, device=self.device), generator=self.generator,
                                 temperature=self.settings.temperature, members=members, uncertainty=self._uncertainty)
        nxt, clipped = clip_to_bounds(self.model.decode(out.next_state), self.obs_low, self.obs_high)
        self.state = self.model.encode(nxt)
        # Everything the knobs need, packed in one tensor (one device->host copy; column_stack
        # takes the [N] columns as they are); the knobs themselves are a few [N] operations on the host.
        columns = [nxt, out.reward, out.termination_prob, clipped]
        if out.disagreement is not None:
            columns += [out.disagreement, out.model_std]
        packed = torch.column_stack(columns).cpu().numpy()
        d = nxt.shape[1]
        return (packed[:, :d], *packed[:, d:].T)

    def member_outcomes(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every member's own next step from ``obs [B, D]`` with ``action`` (``[B]`` or ``[B, A]``,
        the dream's action space), without touching the dreams' states.

        Returns the members' mean next observations ``[M, B, D]`` (placed as a step places them: clipped
        at the support the ``out_of_bounds`` knob sets), model rewards ``[M, B]`` and ends
        ``[M, B]`` (bool, the termination head and end rules): what a penalty on the members' spread
        of Bellman targets reads (MOBILE's), no uncertainty knob applied. Plain tensors (not
        inference tensors), so they can meet autograd-tracked ones later.
        """
        with torch.inference_mode():
            # In the model's dtype, as step's inputs are (an agent's buffer may hold float64 observations).
            obs = obs.to(self.device, self.state.dtype)
            action = action.to(self.device, torch.long if self.discrete else self.state.dtype)
            out = self.model.predict(self.model.encode(obs), action, temperature=0.0, members="all")
            nxt, _ = clip_to_bounds(self.model.decode(out.next_state), self.obs_low, self.obs_high)
            outcomes = (nxt, out.reward, out.termination_prob > 0.5)
        return tuple(t.clone() for t in outcomes)

    def step(self, actions: Any) -> StepBatch:
        """Advance every dream by one step with ``actions`` (``[N]`` or ``[N, *act_shape]``)."""
        s = self.settings
        obs, reward, termination_prob, clipped, *uncertainty = self._predict(actions)
        self.elapsed += 1
        reward = reward.astype(np.float64)
        clipped = clipped.astype(np.int64, copy=False)
        # -1 marks "not computed" (NaN would make two identical steps compare unequal).
        disagreement = uncertainty[0].astype(np.float32) if uncertainty else np.full(self.num_envs, -1.0, np.float32)
        if s.uncertainty_penalty > 0:
            measure = uncertainty[self._penalty_column]
            if self._penalty_threshold > 0:
                measure = np.maximum(measure - self._penalty_threshold, 0)  # Python scalars keep float32 (NEP 50)
            penalty = (s.uncertainty_penalty * measure).astype(np.float32)
            reward = reward - penalty
        else:
            penalty = np.zeros(self.num_envs, np.float32)
        terminated = termination_prob > 0.5
        # The knobs that are off add no operations: a single dream's step is a few dozen of them.
        if s.out_of_bounds == "halt":
            left_bounds = clipped > 0
            terminated |= left_bounds
        else:
            left_bounds = np.zeros(self.num_envs, np.bool_)
        if self._support_halt is not None:
            beyond = self._support.distance(obs) > self._support_halt
            left_bounds |= beyond
            terminated |= beyond
        if self._halt_threshold is not None:
            halted = disagreement > self._halt_threshold
            terminated |= halted
            if s.halt_reward is not None and halted.any():
                # MOReL's halt: its reward replaces the model's, penalty and all.
                penalty = np.where(halted, np.float32(0), penalty)
                reward = np.where(halted, float(s.halt_reward), reward)
        else:
            halted = np.zeros(self.num_envs, np.bool_)
        if self.max_episode_steps is not None:
            # As Gymnasium's TimeLimit: a terminating last step is truncated too (both flags set).
            truncated = self.elapsed >= self.max_episode_steps
        else:
            truncated = np.zeros(self.num_envs, np.bool_)
        return StepBatch(
            observations=np.ascontiguousarray(obs, dtype=self.obs_dtype).reshape(-1, *self.obs_shape),
            rewards=reward,
            terminated=terminated,
            truncated=truncated,
            info={
                "disagreement": disagreement,
                "penalty": penalty,
                "clipped_dims": clipped,
                "halted": halted,
                "left_bounds": left_bounds,
            },
        )
