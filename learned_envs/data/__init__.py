"""Logged data: the canonical :class:`Transitions`, its readers and writers, and ``collect``.

``load(source)`` and ``save(data, path)`` pick the format from the argument.
"""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym

from learned_envs.data.npz import load_npz, save_npz
from learned_envs.data.transitions import DataError, Transitions, as_transitions

__all__ = ["DataError", "Transitions", "as_transitions", "load", "save", "load_npz", "save_npz", "collect"]


def load(
    source: str | os.PathLike,
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
) -> Transitions:
    """Read logged transitions from ``source``, choosing the reader from its name."""
    path = Path(source)
    if path.suffix == ".npz":
        return load_npz(path, observation_space, action_space)
    raise DataError(str(source), None, f"unknown data format {path.suffix!r}: expected a .npz file")


def save(data: Transitions, path: str | os.PathLike) -> Path:
    """Write ``data`` in the format named by ``path``'s suffix."""
    path = Path(path)
    if path.suffix == ".npz":
        return save_npz(data, path)
    raise ValueError(f"{path}: unknown data format {path.suffix!r}: expected .npz")


def collect(*args, **kwargs) -> Transitions:
    """See :func:`learned_envs.data.collecting.collect`."""
    from learned_envs.data.collecting import collect as _collect

    return _collect(*args, **kwargs)
