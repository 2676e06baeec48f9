"""The WorldModel protocol every model family implements, and the family registry.

A dream never touches a model's internals. The step core calls ``encode``/``predict``/``decode``;
the trainer in :mod:`learned_envs.fitting` calls ``prepare``, ``loss``, ``score``, ``snapshot``,
``restore`` and ``keep_members`` stage by stage; the checkpoint stores ``family`` and
``config`` and rebuilds the model through :func:`model_family`.

Shapes: B = batch, D = flat observation size, S = state size (D for state-space models),
A = action features, M = members of the stage being trained (ensemble members, or 1).

How a second family plugs in (a latent model for pixels, a recurrent one for partial observability):

1. subclass :class:`WorldModel` with ``family = "my-family"`` and a ``Config`` dataclass holding
   ``obs_dim``, ``action_dim``, ``discrete_actions`` and its own sizes;
2. implement the serving half (``encode`` to a latent, ``predict`` in latent space, ``decode``
   back to observations) and the fitting half (its stages, per-member ``loss`` and ``score``,
   member snapshots); ``tensor_shapes`` lets a checkpoint be size-checked before anything is
   allocated;
3. decorate it with :func:`register_family`. ``fit(..., config=FitConfig(model=MyConfig(...)))``
   then trains it, checkpoints record its name, and every dream face serves it unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch
from torch import nn


@dataclass
class Prediction:
    """One batched model step, as the dream core consumes it.

    ``disagreement`` and ``model_std`` are ``None`` unless ``predict`` was asked for them
    (computing them costs a pass through every member). Fields are tensors from ``predict`` and
    numpy arrays from ``predict_host``.
    """

    next_state: torch.Tensor  # [B, S]
    reward: torch.Tensor  # [B]
    termination_prob: torch.Tensor  # [B]
    disagreement: torch.Tensor | None = None  # [B] spread between members' predictions, data std units
    model_std: torch.Tensor | None = None  # [B] largest member's predicted std norm, data std units


@dataclass
class Batch:
    """Logged transitions as device tensors: what ``loss`` and ``score`` read.

    ``obs [B, D]`` and ``next_obs [B, D]`` float32, ``action [B]`` long (Discrete) or
    ``[B, A]`` float32 (Box), ``reward [B]`` and ``terminated [B]`` float32.
    """

    obs: torch.Tensor
    action: torch.Tensor
    next_obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]

    def index(self, rows: torch.Tensor) -> "Batch":
        """The rows ``rows`` (any integer index shape ``[*R]``) of every field: ``[*R, ...]``."""
        return Batch(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))


@dataclass
class ModelConfig:
    """Fields every family's config has; a family's ``Config`` adds its own sizes."""

    obs_dim: int
    action_dim: int
    discrete_actions: bool

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def flags(cls) -> frozenset[str]:
        """The fields that are true/false switches (the rest are sizes)."""
        return frozenset(f.name for f in dataclasses.fields(cls) if f.type in (bool, "bool"))


class WorldModel(nn.Module, ABC):
    """A learned environment model, batched over a leading dimension B, on any torch device."""

    family: ClassVar[str]
    Config: ClassVar[type[ModelConfig]]
    # Largest accepted value of each size field of a Config read from an untrusted file.
    size_limits: ClassVar[dict[str, int]] = {}
    # Config fields added after checkpoints were written without them: the value their absence meant.
    legacy_defaults: ClassVar[dict[str, Any]] = {}
    config: ModelConfig

    # -- serving -------------------------------------------------------------------------
    @abstractmethod
    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """``[B, D] -> [B, S]``."""

    @abstractmethod
    def decode(self, state: torch.Tensor) -> torch.Tensor:
        """``[B, S] -> [B, D]``."""

    @abstractmethod
    def predict(
        self,
        state: torch.Tensor,
        action: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        members: torch.Tensor | str | None = None,
        uncertainty: bool = False,
    ) -> Prediction:
        """Step ``state [B, S]`` with ``action`` (``[B]`` Discrete, ``[B, A]`` Box).

        ``members``: ``None`` a random member per row, a ``[B]`` index tensor, ``"mean"``, or
        ``"all"``: every member's prediction, each field but the uncertainty ones with a leading
        ``[M]`` (``next_state [M, B, S]``, ``reward [M, B]``), as a penalty on the members' spread reads them.
        ``temperature`` scales the sampled noise (0: no sampling). ``uncertainty`` also fills
        ``disagreement`` and ``model_std``. Every random draw uses ``generator``.
        """

    # A family whose state is the observation (encode/decode are the identity) may offer
    # ``predict_host(state, action, *, generator, temperature, members, uncertainty)``: predict's
    # math on numpy arrays (float32 ``state [B, S]``, ``members`` an index array, ``generator`` a
    # numpy Generator), returning a Prediction of numpy arrays that agrees with predict to float
    # rounding given the same draws. The dream core then steps a single CPU dream without torch,
    # whose per-operation overhead outweighs one dream's arithmetic. None: the family has none.
    predict_host: Callable[..., Prediction] | None = None

    @property
    @abstractmethod
    def num_members(self) -> int:
        """How many members ``predict`` chooses among (1 for a single model)."""

    # -- fitting -------------------------------------------------------------------------
    stages: ClassVar[tuple[str, ...]]  # trained in this order, each by the same early-stopping loop

    @abstractmethod
    def prepare(self, train: Batch, *, keep_normalizers: bool = False) -> frozenset[str]:
        """Set data-dependent statistics from the training rows, before any stage.

        ``keep_normalizers`` (a warm start) keeps the input/output scaling the weights were
        trained under and updates only what the data bounds (e.g. the support box). Returns the
        stages whose weights it drew afresh: a warm start fits those with a cold fit's budget.
        """
        return frozenset()

    def fit_stages(self, train: Batch) -> tuple[str, ...]:
        """The stages worth training on ``train`` (all of :attr:`stages` unless a family says otherwise)."""
        return self.stages

    def strata(self, train: Batch, stage: str) -> list[torch.Tensor] | None:
        """Row groups ``[rows_i]`` (indices into ``train``) that each minibatch of ``stage`` draws
        equally from, or ``None`` for uniform rows (the default). For a rare class that the loss
        must not drown in the common one, drawing it as often as the rest is the same objective
        as weighting it up, with far less noise."""
        return None

    @abstractmethod
    def stage_parameters(self, stage: str) -> Iterator[nn.Parameter]:
        """The parameters one stage trains."""

    @abstractmethod
    def stage_members(self, stage: str) -> int:
        """M: how many independently trained members the stage has (its loss/score width)."""

    @abstractmethod
    def loss(self, batch: Batch, stage: str) -> torch.Tensor:
        """``[M]`` training loss per member; ``batch`` fields are ``[M, b, ...]`` (one minibatch per member)."""

    @abstractmethod
    def score(self, holdout: Batch, stage: str) -> torch.Tensor:
        """``[M]`` held-out error per member (lower is better), no gradient; fields ``[B, ...]``."""

    @abstractmethod
    def snapshot(self, stage: str, members: torch.Tensor) -> None:
        """Remember the current weights of the members where ``members [M]`` (bool) is true."""

    @abstractmethod
    def restore(self, stage: str) -> None:
        """Put every member of ``stage`` back to its last snapshot."""

    @abstractmethod
    def keep_members(self, index: torch.Tensor) -> None:
        """Keep only the ensemble members ``index [K]`` (e.g. the elites), in place."""

    def finish_stage(self, stage: str, logged: Sequence[Batch]) -> None:
        """Called once a stage's best weights are back, with every logged row the fit may use
        (the training batch and the held-out one, not copied together): a family can calibrate
        what gradient steps left off here."""

    # -- checkpoints ---------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def tensor_shapes(cls, config: ModelConfig) -> dict[str, tuple[int, ...]]:
        """The shape of every ``state_dict`` entry for ``config``, computed without allocating."""

    @classmethod
    def config_from_json(cls, values: dict[str, Any]) -> ModelConfig:
        """A ``Config`` from untrusted JSON: known keys only, each size a whole number in
        ``[1, size_limits]``, each flag a bool (a missing one as ``legacy_defaults`` says); raises
        ``ValueError`` naming the key."""
        known = {f.name: f for f in dataclasses.fields(cls.Config)}
        values = {**{k: v for k, v in cls.legacy_defaults.items() if k not in values}, **values}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; known: {sorted(known)}")
        missing = sorted(name for name, f in known.items()
                         if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if missing:
            raise ValueError(f"missing key(s) {missing}")
        flags = cls.Config.flags()
        for key, value in values.items():
            if key in flags:
                if not isinstance(value, bool):
                    raise ValueError(f"'{key}' should be true or false, not {value!r:.80}")
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"'{key}' should be a positive whole number, not {value!r:.80}")
            limit = cls.size_limits.get(key)
            if limit is not None and value > limit:
                raise ValueError(f"'{key}' = {value} is above this family's limit of {limit}")
        return cls.Config(**values)

    @classmethod
    def parameter_count(cls, config: ModelConfig) -> int:
        """Number of values the model holds for ``config`` (for size checks before allocating)."""
        return sum(math.prod(shape) for shape in cls.tensor_shapes(config).values())


_FAMILIES: dict[str, type[WorldModel]] = {}


def register_family(cls: type[WorldModel]) -> type[WorldModel]:
    """Class decorator: make ``cls`` buildable by name from a checkpoint and trainable by ``fit``."""
    name = cls.family
    if name in _FAMILIES and _FAMILIES[name] is not cls:
        raise ValueError(f"model family {name!r} is already registered by {_FAMILIES[name].__qualname__}")
    _FAMILIES[name] = cls
    return cls


def model_family(name: str) -> type[WorldModel]:
    """The registered family ``name``; ``KeyError`` naming the known ones otherwise.

    Families ship with the package (importing :mod:`learned_envs.models` registers them); a
    checkpoint's family name is only ever looked up here, never imported.
    """
    import learned_envs.models  # noqa: F401  (registers the shipped families)

    try:
        return _FAMILIES[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown model family {name!r}; known: {sorted(_FAMILIES)}") from None


def family_of_config(config: ModelConfig) -> type[WorldModel]:
    """The registered family whose ``Config`` is ``type(config)``."""
    import learned_envs.models  # noqa: F401

    for cls in _FAMILIES.values():
        if cls.Config is type(config):
            return cls
    raise KeyError(f"no registered model family takes a {type(config).__name__}; known: {sorted(_FAMILIES)}")


def model_families() -> list[str]:
    import learned_envs.models  # noqa: F401

    return sorted(_FAMILIES)
