"""The uncertainty knobs of a dream, shared by the fitter (which stores their defaults in the
checkpoint) and the dream core (which applies them)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

PROPAGATIONS = ("random", "fixed", "mean")
RESET_FROM = ("starts", "logged")
PENALTY_OF = ("model_std", "disagreement")
OUT_OF_BOUNDS = ("halt", "clip")
# The quantiles a fit records of the members' disagreement on the training rows
# (fit.metrics.train_disagreement_quantiles) and of the logged states' neighbour distances
# (fit.metrics.support_distance_quantiles); the *_quantile knobs interpolate between them.
DISAGREEMENT_QUANTILES = (0.0, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0)
# Largest magnitude of a numeric knob. The core computes in float32 (max ~3.4e38), and a knob
# multiplies sampled noise, stds and ranges that may themselves reach ~1e4, then gets squared in
# the members' spread: sqrt(3.4e38) / 1e4 ~ 1e15 keeps every such product and square finite.
# No useful setting comes near it (temperatures are ~1, penalties ~1, rewards ~1e3).
KNOB_LIMIT = 1e15
# Step counters are int64 arrays in the core; 2**62 leaves room to count past the limit.
MAX_EPISODE_STEPS_LIMIT = 2**62


@dataclass
class DreamSettings:
    """The uncertainty knobs. Defaults come from the checkpoint; ``gym.make`` kwargs override them.

    temperature: scales every per-step random draw of the model. Above 0 it scales the sampled
        Gaussian noise (linearly: the same seed draws the same members and noise at any positive
        temperature). At 0 nothing is sampled per step: the ensemble mean (with
        ``propagation="random"`` or ``"mean"``) or the episode's member's mean (``"fixed"``), so
        the dream is deterministic given its start.
    propagation: which ensemble member steps a dream: ``"random"`` a fresh one every step (PETS's
        TS1), ``"fixed"`` one per episode (TS-inf), ``"mean"`` the members' average.
    uncertainty_penalty: MOPO's lambda: reward - lambda * the ``penalty_of`` measure.
    penalty_of: what the penalty multiplies: ``"model_std"`` (MOPO's: the largest member's
        predicted std norm, in data std units) or ``"disagreement"`` (the spread of the members'
        predicted means, ``info["disagreement"]``, the measure MOReL's halt reads). The members'
        own std is learned on the data and levels off beyond it, where their means part ways: on
        a SAC agent's real path off a medium HalfCheetah dataset, model std went 0.09 -> 0.30 and
        stayed there while disagreement ranged 0.2 -> 1.4.
    penalty_threshold: the measure's level below which nothing is charged: the penalty is
        ``uncertainty_penalty * max(0, measure - penalty_threshold)`` (0, the default: MOPO's
        linear penalty). A soft halt: at the training rows' own level of disagreement an agent
        pays only for steps beyond what the members showed on their data, where a halt would end
        the branch. ``"auto"``: the ``penalty_quantile`` of the disagreement on the training data
        (recorded at fit time; with ``penalty_of="disagreement"``, the measure recorded).
    penalty_quantile: which quantile of the training rows' disagreement ``penalty_threshold="auto"`` is.
    halt_threshold: MOReL's halt: the episode ends (``terminated``) when the members' disagreement
        exceeds it. ``None`` never; ``"auto"`` = ``halt_factor`` x the ``halt_quantile`` of the
        disagreement on the training data (recorded at fit time).
    halt_quantile: which quantile of the training rows' disagreement ``"auto"`` scales: 1 (the
        default, MOReL's) the largest. Off a medium dataset an agent's fiction can sit inside the
        training rows' range (a fictional HalfCheetah gait at 0.6-0.8 where the largest was 1.5
        and the 0.99 quantile 0.25): a halt at the 0.99 quantile removed it.
    halt_reward: reward of a step where the disagreement halt fires; ``None`` keeps the model's
        predicted reward (and its penalty).
    out_of_bounds: a predicted observation outside the data's support is clipped; ``"halt"``
        also ends the episode (the model is a guess beyond its data and an agent would exploit
        it; reported as ``info["left_bounds"]``, with the model's reward), ``"clip"`` goes on.
    bounds_margin: the support is the box of every logged observation, widened on each side by
        this fraction of its range (default 2: twice the data's own width on each side). Beyond
        the data's box the model answers as at its edge, which keeps a way past it safe, and a
        support as tight as a random policy's logs (CartPole's cart within +-0.3) leaves an
        agent too little room to learn to balance: a halt there ends an episode for a drift the
        real env would forgive for hundreds of steps. PPO trained in dreams of random CartPole
        logs (seeds 0-4 at 1,000, 2,000 and 5,000 rows) failed to transfer on 2 of 5 at 1,000
        rows at 0.25; on 3 of 15 at 1 (the cart drifting to the halt after 115-140 dream steps,
        and off the real track after 173-203); on 1 of 15 at 2 (README, stop 30).
    support_halt: the episode also ends (``terminated``, reported as ``info["left_bounds"]``, with
        the model's reward) where the next observation lies farther than this from the nearest
        logged observation, in the logged data's std units (Euclidean over the features, each
        scaled by its std; :class:`~learned_envs.dreams.support.LoggedSupport`). ``None`` (the
        default) never; ``"auto"`` = ``support_factor`` x the ``support_quantile`` of the logged
        states' own distances to their nearest neighbours (recorded at fit time). The box checks
        each feature alone; this sees them together. On a sampled medium Hopper log, held-out
        logged rows lie a median 0.19 (99th percentile 0.58) from their nearest logged neighbour,
        a gait the dream invented beyond the log a median 7.1 (on HalfCheetah's 17 features the
        held-out median is 0.59, the 99th percentile 1.59). Needs the fit's sample of logged
        states (``fit --reset-states N``), which it searches every step (about 2 ms for 16 dreams
        against 100,000 logged states on one core).
    support_factor, support_quantile: what ``support_halt="auto"`` scales: by default twice the
        0.99 quantile.
    reset_from: where episodes start: ``"starts"`` the logged episode starts (the real env's reset
        distribution), ``"logged"`` any logged state, drawn uniformly from the sample the fit stored
        (``fit --reset-states N``). Branched short rollouts from logged states, with a small
        ``max_episode_steps`` as the horizon (a truncation, which agents bootstrap), are MBPO's
        and MOPO's rollout scheme.
    start_share: with ``reset_from="logged"``, the share of resets drawn from the logged episode
        starts instead (0 to 1). Branches from states drawn uniformly reach an episode's start
        about once in its length: an agent trained on a medium HalfCheetah dataset's 1,000-step
        episodes ran 35-37 normalised from logged mid-gait states and about 0 from the real
        env's reset, having never practised getting going.
    uncertainty_info: fill ``info["disagreement"]`` every step (-1, "not computed", otherwise). It costs a
        pass through every member, where a plain step sends each dream through one member, so it
        is off unless asked for; a halt or penalty that needs the members' spread computes it
        whatever this says.
    """

    temperature: float = 1.0
    propagation: str = "random"
    uncertainty_penalty: float = 0.0
    penalty_of: str = "model_std"
    penalty_threshold: float | str = 0.0
    penalty_quantile: float = 0.99
    halt_threshold: float | str | None = None
    halt_factor: float = 1.0
    halt_quantile: float = 1.0
    halt_reward: float | None = None
    out_of_bounds: str = "halt"
    bounds_margin: float = 2.0
    support_halt: float | str | None = None
    support_factor: float = 2.0
    support_quantile: float = 0.99
    uncertainty_info: bool = False
    reset_from: str = "starts"
    start_share: float = 0.0

    @classmethod
    def names(cls) -> frozenset[str]:
        """Every knob's name (what ``gym.make`` takes beyond the checkpoint)."""
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def resolve(cls, defaults: dict[str, Any], overrides: dict[str, Any]) -> "DreamSettings":
        """The checkpoint's ``defaults`` with ``overrides`` on top.

        An override of ``None`` is a value, not an absence: ``halt_threshold=None`` switches off
        a halt the checkpoint stores. Knobs for which ``None`` means nothing reject it.
        """
        names = cls.names()
        unknown = set(overrides) - names
        if unknown:
            # Worded as Python words it for any constructor ("got an unexpected keyword argument
            # 'frameskip'"): wrappers such as TorchRL's GymEnv pass extra kwargs to gym.make and
            # retry without them only when the TypeError says so, as Gymnasium's own envs' does.
            raise TypeError(f"dream got an unexpected keyword argument {sorted(unknown)[0]!r}: "
                            f"unknown dream option(s) {sorted(unknown)}; known: {sorted(names)}")
        values = {k: v for k, v in defaults.items() if k in names and v is not None}
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first knob whose value is of the wrong kind or range."""
        for name in ("temperature", "uncertainty_penalty", "halt_factor", "bounds_margin", "support_factor"):
            _require_number(name, getattr(self, name), minimum=0.0)
        for name in ("start_share", "halt_quantile", "penalty_quantile", "support_quantile"):
            _require_number(name, getattr(self, name), minimum=0.0)
            if getattr(self, name) > 1:
                raise ValueError(f"{name} must be <= 1, got {getattr(self, name)}")
        for name, choices in (("propagation", PROPAGATIONS), ("reset_from", RESET_FROM), ("penalty_of", PENALTY_OF),
                              ("out_of_bounds", OUT_OF_BOUNDS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        for name in ("halt_threshold", "support_halt"):
            value = getattr(self, name)
            if value != "auto" and value is not None:
                if isinstance(value, str):
                    raise ValueError(f"{name} must be a number, 'auto' or None, got {value!r}")
                _require_number(name, value, minimum=0.0)
        if self.penalty_threshold == "auto":
            if self.penalty_of != "disagreement":
                raise ValueError("penalty_threshold='auto' is a quantile of the training rows' disagreement: it needs "
                                 f"penalty_of='disagreement', got penalty_of={self.penalty_of!r}")
        elif isinstance(self.penalty_threshold, str):
            raise ValueError(f"penalty_threshold must be a number or 'auto', got {self.penalty_threshold!r}")
        else:
            _require_number("penalty_threshold", self.penalty_threshold, minimum=0.0)
        if self.halt_reward is not None:
            _require_number("halt_reward", self.halt_reward)
        if not isinstance(self.uncertainty_info, bool):
            raise ValueError(f"uncertainty_info must be true or false, got {self.uncertainty_info!r}")


def _require_number(name: str, value: Any, minimum: float | None = None) -> None:
    """A finite real number (not a bool, not a string) of magnitude at most :data:`KNOB_LIMIT`,
    at least ``minimum`` if given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    try:
        number = float(value)  # a huge int (10**400) overflows here rather than in the core
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r:.80}")
    if abs(number) > KNOB_LIMIT:
        raise ValueError(f"{name} = {value:.3g} is beyond +-{KNOB_LIMIT:g}: the dream computes in float32 and would overflow")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value}")


def check_max_episode_steps(value: Any, name: str = "max_episode_steps") -> int | None:
    """``value`` as a step limit: ``None`` (no limit) or a whole number in ``[1, 2**62]``; a
    ``ValueError`` naming ``name`` otherwise (the core counts steps in int64)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive whole number or None, got {value!r:.80}")
    if not 1 <= value <= MAX_EPISODE_STEPS_LIMIT:
        raise ValueError(f"{name} must be between 1 and 2**62, got {value:.3g}" if value > 0 else f"{name} must be >= 1, got {value}")
    return int(value)
