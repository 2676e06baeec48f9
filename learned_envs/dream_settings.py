"""The uncertainty knobs of a dream, shared by the fitter (which stores their defaults in the
checkpoint) and the dream core (which applies them)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

PROPAGATIONS = ("random", "fixed", "mean")


@dataclass
class DreamSettings:
    """The uncertainty knobs. Defaults come from the checkpoint; ``gym.make`` kwargs override them.

    temperature: scales the sampled model noise; 0 gives the chosen member's mean (deterministic
        with ``propagation="mean"`` or ``"fixed"``).
    propagation: which ensemble member steps a dream: ``"random"`` a fresh one every step (PETS's
        TS1), ``"fixed"`` one per episode (TS-inf), ``"mean"`` the members' average.
    uncertainty_penalty: MOPO's lambda: reward - lambda * max over members of the norm of the
        member's predicted std (in data std units).
    halt_threshold: MOReL's halt: the episode ends (``terminated``) when the members' disagreement
        exceeds it. ``None`` never; ``"auto"`` = ``halt_factor`` x the largest disagreement seen
        on the training data (recorded at fit time).
    halt_reward: reward of a halting step; ``None`` keeps the model's predicted reward.
    out_of_bounds: a predicted observation outside the data's support is clipped; ``"halt"``
        also ends the episode (the model is a guess beyond its data and an agent would exploit
        it), ``"clip"`` goes on.
    bounds_margin: the support is the box of every logged observation, widened on each side by
        this fraction of its range (the model extrapolates a little way safely, and a support as
        tight as a random policy's logs would leave an agent no room to act).
    """

    temperature: float = 1.0
    propagation: str = "random"
    uncertainty_penalty: float = 0.0
    halt_threshold: float | str | None = None
    halt_factor: float = 1.0
    halt_reward: float | None = None
    out_of_bounds: str = "halt"
    bounds_margin: float = 0.25

    @classmethod
    def resolve(cls, defaults: dict[str, Any], overrides: dict[str, Any]) -> "DreamSettings":
        names = {f.name for f in fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown dream option(s) {sorted(unknown)}; known: {sorted(names)}")
        values = {k: v for k, v in defaults.items() if k in names and v is not None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.propagation not in PROPAGATIONS:
            raise ValueError(f"propagation must be one of {PROPAGATIONS}, got {self.propagation!r}")
        if self.uncertainty_penalty < 0:
            raise ValueError(f"uncertainty_penalty must be >= 0, got {self.uncertainty_penalty}")
        if isinstance(self.halt_threshold, str) and self.halt_threshold != "auto":
            raise ValueError(f"halt_threshold must be a number, 'auto' or None, got {self.halt_threshold!r}")
        if self.bounds_margin < 0:
            raise ValueError(f"bounds_margin must be >= 0, got {self.bounds_margin}")
        if self.out_of_bounds not in ("halt", "clip"):
            raise ValueError(f"out_of_bounds must be 'halt' or 'clip', got {self.out_of_bounds!r}")
