"""What a fit may do: the model to train, its budget in gradient updates and seconds, early stopping.

Every number the trainer uses lives here. ``None`` means "scaled to the data" (see
:meth:`FitConfig.resolved`), so the defaults suit a thousand rows and a million alike.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any

from learned_envs.models.base import ModelConfig
from learned_envs.models.ensemble import default_model_config


class FitError(ValueError):
    """A fit that cannot produce a usable dream (bad options, data it cannot learn, divergence)."""


def default_threads() -> int:
    """Torch threads for a fit: one on a machine of two cores or fewer (where a second thread
    fights whatever else runs, and a busy machine would slow a two-thread fit far more than a
    one-thread one), half the cores above that, at most 8."""
    cores = os.cpu_count() or 1
    return 1 if cores <= 2 else min(8, cores // 2)


@dataclass
class FitConfig:
    """Options of :func:`learned_envs.fitting.fit_world_model`.

    model: the family's config; its type picks the family (``EnsembleConfig`` -> ``"ensemble"``).
        ``obs_dim``/``action_dim``/``discrete_actions`` are filled in from the data. ``None``:
        the ensemble sized for the data (:func:`~learned_envs.models.ensemble.default_model_config`).
    num_elites: ensemble members kept, those with the lowest holdout error.
    batch_size: rows per member per update; ``None``: ``clip(train_rows / 8, 32, 256)`` rounded
        to a power of two (small data takes small, cheap steps).
    learning_rate: ``None``: ``1e-3 * sqrt(batch_size / 256)`` (the square-root rule, anchored at
        MBPO's 1e-3 for 256).
    max_updates: cap on gradient updates of the dynamics; ``None``: enough for 40 passes over
        the data, between 2,000 and 20,000 (a warm start: 10 passes, between 200 and 2,000, and
        the termination head gets no more).
    min_updates: early stopping may not stop before this many updates (``None``: 500; 0 for a
        warm start, whose weights are already trained).
    max_seconds: wall-clock cap on the whole fit (``None``: none); the best weights so far are kept.
    eval_every: updates between holdout evaluations; ``None``: about one pass over the data,
        between 25 and 250.
    patience: updates without a holdout improvement (relative ``improvement``) before stopping;
        ``None``: ``8 * eval_every`` (``3 * eval_every`` for a warm start: a refit in seconds).
    lr_decays: times the learning rate may be cut by ``lr_decay_factor`` when ``patience / 2``
        updates pass without improvement (each cut restarts the patience count) before the
        stage stops: large steps early, fine ones at the end. ``None``: 2, and 0 for a warm
        start (trained weights need a short polish, not a schedule).
    holdout_fraction: share of episodes held out (whole episodes; the tail of a single episode).
    holdout_rows: early stopping scores a fixed random sample of at most this many holdout rows.
    termination_*: the termination classifier's optimiser and budget (it reuses the loop above).
    threads: torch CPU threads during the fit (``None``: :func:`default_threads`).
    """

    model: ModelConfig | None = None
    num_elites: int = 5
    batch_size: int | None = None
    learning_rate: float | None = None
    weight_decay: float = 5e-5
    max_updates: int | None = None
    min_updates: int | None = None
    max_seconds: float | None = None
    eval_every: int | None = None
    patience: int | None = None
    improvement: float = 0.01
    lr_decays: int | None = None
    lr_decay_factor: float = 0.3
    holdout_fraction: float = 0.2
    holdout_rows: int = 4096
    termination_learning_rate: float = 3e-3
    termination_weight_decay: float = 1e-4
    termination_max_updates: int = 3000
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None

    def validate(self) -> None:
        """Raise :class:`FitError` naming the first option that could not make a working dream."""
        whole = {"num_elites": 1, "holdout_rows": 1, "termination_max_updates": 1}
        optional_whole = {"batch_size": 1, "max_updates": 1, "min_updates": 0, "eval_every": 1, "patience": 1, "threads": 1,
                          "lr_decays": 0}
        for name, low in whole.items():
            _whole(name, getattr(self, name), low)
        for name, low in optional_whole.items():
            if getattr(self, name) is not None:
                _whole(name, getattr(self, name), low)
        for name in ("weight_decay", "improvement", "termination_weight_decay"):
            _real(name, getattr(self, name), 0.0)
        for name in ("learning_rate", "termination_learning_rate", "max_seconds"):
            value = getattr(self, name)
            if value is not None:
                _real(name, value, 0.0)
                if value == 0:
                    raise FitError(f"{name} must be above 0, got {value}")
        _real("holdout_fraction", self.holdout_fraction, 0.0)
        _real("lr_decay_factor", self.lr_decay_factor, 0.0)
        if not 0 < self.lr_decay_factor <= 1:
            raise FitError(f"lr_decay_factor must be in (0, 1], got {self.lr_decay_factor}")
        if self.holdout_fraction >= 1:
            raise FitError(f"holdout_fraction must be below 1 (something must be left to train on), got {self.holdout_fraction}")
        if self.model is None:
            return
        if not isinstance(self.model, ModelConfig):
            raise FitError(f"model must be a model config (e.g. EnsembleConfig), got {type(self.model).__name__}")
        flags = self.model.flags()
        for f in dataclasses.fields(self.model):
            value = getattr(self.model, f.name)
            if f.name in flags:
                if not isinstance(value, bool):
                    raise FitError(f"model.{f.name} must be true or false, got {value!r}")
            elif f.name not in ("obs_dim", "action_dim"):
                _whole(f"model.{f.name}", value, 1)
        members = getattr(self.model, "ensemble_size", None)
        if members is not None and self.num_elites > members:
            raise FitError(f"num_elites ({self.num_elites}) exceeds the ensemble size ({members})")

    def resolved(self, train_rows: int, warm_start: bool = False) -> "FitConfig":
        """A copy with every ``None`` budget set for ``train_rows`` training rows (and a warm start)."""
        batch = self.batch_size or int(2 ** round(math.log2(min(256, max(32, train_rows / 8)))))
        lr = self.learning_rate or 1e-3 * math.sqrt(batch / 256)
        per_pass = max(1, math.ceil(train_rows / batch))
        if warm_start:
            max_updates = self.max_updates or int(min(2_000, max(200, 10 * per_pass)))
        else:
            max_updates = self.max_updates or int(min(20_000, max(2_000, 40 * per_pass)))
        eval_every = self.eval_every or int(min(250, max(25, per_pass)))
        patience = self.patience or (3 if warm_start else 8) * eval_every
        min_updates = self.min_updates if self.min_updates is not None else (0 if warm_start else 500)
        lr_decays = self.lr_decays if self.lr_decays is not None else (0 if warm_start else 2)
        threads = self.threads or default_threads()
        model = self.model if self.model is not None else default_model_config(train_rows)
        return dataclasses.replace(self, model=model, batch_size=batch, learning_rate=lr, max_updates=max_updates,
                                   min_updates=min(min_updates, max_updates), eval_every=eval_every, patience=patience, threads=threads,
                                   lr_decays=lr_decays,
                                   termination_max_updates=min(self.termination_max_updates, max_updates) if warm_start
                                   else self.termination_max_updates)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model"] = self.model.to_json() if self.model is not None else None
        return out


def _whole(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise FitError(f"{name} must be a whole number >= {low}, got {value!r}")
    if value > 2**31:
        raise FitError(f"{name} = {value} is too large")


def _real(name: str, value: Any, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < low:
        raise FitError(f"{name} must be a finite number >= {low:g}, got {value!r}")
