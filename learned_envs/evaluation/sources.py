"""What an evaluation reads: a checkpoint (by path or registered dream id) and held-out data."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from learned_envs.checkpoint import read_metadata
from learned_envs.data.transitions import Transitions


class RecordedDataUnavailable(ValueError):
    """The dataset a checkpoint records is not one an evaluation may read by itself: pass ``--data``."""


@dataclass
class DreamSource:
    """A checkpoint file, the dream id it is registered under (if any) and its registered defaults."""

    path: Path
    dream_id: str | None
    metadata: dict[str, Any]
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.dream_id or self.path.stem

    @property
    def source_env_id(self) -> str | None:
        return self.metadata.get("source_env_id")


def resolve(checkpoint_or_dream_id: str | os.PathLike) -> DreamSource:
    """A checkpoint path, or the id of a registered dream (``"Dream-CartPole-v0"``)."""
    import learned_envs  # noqa: F401  (registers shipped and user dreams)
    from learned_envs.registry import ENTRY_POINT

    text = str(checkpoint_or_dream_id)
    path = Path(text)
    if path.is_file():
        return DreamSource(path=path.resolve(), dream_id=None, metadata=read_metadata(path))
    dream_id = text.split(":", 1)[1] if text.startswith("learned_envs:") else text
    if dream_id in gym.registry and gym.spec(dream_id).entry_point == ENTRY_POINT:
        kwargs = dict(gym.spec(dream_id).kwargs)
        ckpt = Path(kwargs.pop("checkpoint"))
        return DreamSource(path=ckpt, dream_id=dream_id, metadata=read_metadata(ckpt), defaults=kwargs)
    raise FileNotFoundError(f"{text}: neither a checkpoint file nor a registered dream id (see `learned-envs list`)")


def ensure_registered(source: DreamSource) -> str:
    """The dream id to ``gym.make``: its own, or a temporary one registered for a bare checkpoint path."""
    if source.dream_id is not None:
        return source.dream_id
    from learned_envs import register_dream

    stem = re.sub(r"-v\d+$", "", re.sub(r"[^\w.-]", "_", source.path.stem))
    dream_id = f"LearnedEnvsEval-{stem}-v0"
    register_dream(dream_id, source.path, origin="evaluation")
    source.dream_id = dream_id
    return dream_id


def load_eval_data(source: DreamSource, data: Transitions | str | os.PathLike | None) -> tuple[Transitions, str]:
    """The held-out transitions, and a line saying where they came from.

    With ``data=None``, the fit's own holdout episodes of the dataset recorded in the checkpoint,
    read only when :func:`recorded_dataset` vouches for it.
    """
    from learned_envs import data as data_io

    spaces = (_space(source.metadata, "observation_space"), _space(source.metadata, "action_space"))
    if isinstance(data, Transitions):
        return data, "given transitions"
    if data is not None:
        return data_io.load(data, *spaces), str(data)
    train_path = recorded_dataset(source)
    holdout = source.metadata.get("fit", {}).get("holdout_episodes") or []
    if not holdout:
        raise ValueError(f"{source.path}: the fit recorded no holdout episodes; pass --data FILE")
    full = data_io.load(train_path, *spaces)
    rows = np.isin(full.episode_index(), np.asarray(holdout))
    return full.select(rows), f"{train_path} (the fit's {len(holdout)} holdout episodes)"


def recorded_dataset(source: DreamSource) -> str:
    """The dataset the checkpoint says it was fitted on, if it is safe and right to read it.

    The checkpoint is untrusted, so its ``dataset.path`` is read only when it names a format
    that cannot run code (not a pickled SB3 buffer), the data is here, and its bytes match the
    recorded ``dataset.sha256`` (a null digest vouches for nothing). Otherwise a
    ``FileNotFoundError`` (nothing there) or :class:`RecordedDataUnavailable`, each saying to pass ``--data``.
    """
    from learned_envs import data as data_io

    dataset = source.metadata.get("dataset", {})
    train_path, digest = dataset.get("path"), dataset.get("sha256")
    where = f"{source.path}: no held-out data given (--data FILE), and the training data {train_path!r:.200} recorded in the checkpoint"
    if not isinstance(train_path, str) or not train_path:
        raise FileNotFoundError(f"{where} is not a path; pass --data FILE")
    fmt = data_io.format_of(train_path)
    if fmt not in ("npz", "hdf5", "minari"):
        kind = "is a pickle (an SB3 replay buffer), which is read only when named by the user" if fmt == "sb3" else "is in no known format"
        raise RecordedDataUnavailable(f"{where} {kind}; pass --data FILE")
    if not isinstance(digest, str):
        raise RecordedDataUnavailable(f"{where} has no recorded sha256 to check it against; pass --data FILE")
    try:
        actual = data_io.source_sha256(train_path)
    except OSError:
        raise FileNotFoundError(f"{where} is not here to take its holdout episodes from; pass --data FILE") from None
    if actual != digest:
        raise RecordedDataUnavailable(f"{where} differs from the data the checkpoint was fitted on (sha256 mismatch); pass --data FILE")
    return train_path


def _space(metadata: dict[str, Any], key: str):
    from learned_envs.data.spaces import space_from_json

    return space_from_json(metadata[key]) if key in metadata else None
