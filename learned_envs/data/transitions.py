"""The canonical logged-data container and its validation at the door.

Every reader turns its format into :class:`Transitions`; every consumer (fitting, evaluation)
reads only this. Field names follow Minari / D4RL.

Shapes (N rows, in time order within an episode):
    observations       [N, *obs_shape]   float32
    actions            [N, *act_shape]   float32 (Box) or int64 [N] (Discrete)
    rewards            [N]               float32
    next_observations  [N, *obs_shape]   float32
    terminations       [N]               bool
    truncations        [N]               bool
    episode_ids        [N]               int64, optional (derived from the flags when absent)

An episode ends at a row whose termination or truncation is true.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")


class DataError(ValueError):
    """Logged data that cannot be used; the message names the source, the field and the first bad row."""

    def __init__(self, source: str, field_name: str | None, message: str, row: int | None = None):
        where = source
        if field_name is not None:
            where += f": field '{field_name}'"
        if row is not None:
            where += f", row {row}"
        super().__init__(f"{where}: {message}")
        self.source, self.field, self.row = source, field_name, row
        self.message = message  # without the location prefix, so a reader can re-raise it with more context


@dataclass
class Transitions:
    """Logged transitions of one system, with the spaces they live in.

    ``metadata`` carries provenance: ``source_env_id``, ``behaviour_policy``, ``spaces_inferred``
    and anything a reader knows about where the data came from.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    observation_space: gym.Space
    action_space: gym.Space
    episode_ids: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def episode_ends(self) -> np.ndarray:
        """``[N] bool``: rows after which a new episode starts (the last row always counts)."""
        ends = self.terminations | self.truncations
        if self.episode_ids is not None and len(self) > 1:
            ends = ends | np.append(self.episode_ids[1:] != self.episode_ids[:-1], False)
        ends = ends.copy()
        if len(self):
            ends[-1] = True
        return ends

    def episode_index(self) -> np.ndarray:
        """``[N] int64``: episode number of each row, 0, 1, ... in order of appearance."""
        ends = self.episode_ends
        return np.concatenate([[0], np.cumsum(ends[:-1])]).astype(np.int64)

    @property
    def num_episodes(self) -> int:
        return int(self.episode_ends.sum())

    def episode_starts(self) -> np.ndarray:
        """``[E, *obs_shape]``: the first observation of every episode."""
        first = np.concatenate([[True], self.episode_ends[:-1]])
        return self.observations[first]

    def select(self, rows: np.ndarray) -> "Transitions":
        """A copy holding only ``rows`` (a bool mask or index array), spaces and metadata kept."""
        ids = self.episode_ids[rows] if self.episode_ids is not None else self.episode_index()[rows]
        return Transitions(
            *(getattr(self, f)[rows] for f in FIELDS),
            observation_space=self.observation_space,
            action_space=self.action_space,
            episode_ids=ids,
            metadata=dict(self.metadata),
        )


def as_transitions(
    arrays: dict[str, np.ndarray],
    observation_space: gym.Space,
    action_space: gym.Space,
    source: str,
    metadata: dict[str, Any] | None = None,
    atol: float = 1e-5,
) -> Transitions:
    """Cast raw arrays to the canonical dtypes, validate them, and wrap them.

    Raises :class:`DataError` naming ``source``, the field and the first bad row.
    """
    for name in FIELDS:
        if name not in arrays:
            raise DataError(source, name, f"missing (a transitions file needs {', '.join(FIELDS)})")
    n = len(arrays["rewards"]) if np.ndim(arrays["rewards"]) else 0
    if n == 0:
        raise DataError(source, "rewards", "no transitions: the data is empty")

    obs_shape = observation_space.shape
    discrete = isinstance(action_space, gym.spaces.Discrete)
    act_shape = () if discrete else action_space.shape
    expected = {
        "observations": (n, *obs_shape),
        "next_observations": (n, *obs_shape),
        "actions": (n, *act_shape),
        "rewards": (n,),
        "terminations": (n,),
        "truncations": (n,),
    }
    out: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        value = np.asarray(arrays[name])
        if name == "actions" and discrete and value.shape == (n, 1):
            value = value.reshape(n)
        if value.shape != shape:
            raise DataError(source, name, f"has shape {value.shape}, expected {shape}")
        if value.dtype.kind not in "biuf":
            raise DataError(source, name, f"has dtype {value.dtype}, expected numbers")
        if name in ("terminations", "truncations"):
            bad = ~np.isin(value, (0, 1))
            if bad.any():
                raise DataError(source, name, f"value {value[bad][0]!r} is not a boolean", _first(bad))
            value = value.astype(bool)
        else:
            if value.dtype.kind == "f":
                bad = ~np.isfinite(value).reshape(n, -1).all(axis=1)
                if bad.any():
                    raise DataError(source, name, "is NaN or infinite", _first(bad))
            if name == "actions" and discrete:
                if value.dtype.kind == "f" and not np.all(value == np.round(value)):
                    raise DataError(source, name, "discrete actions must be whole numbers", _first(value != np.round(value)))
                value = value.astype(np.int64)
            else:
                value = value.astype(np.float32)
        out[name] = value

    _check_actions_in_space(out["actions"], action_space, source)

    episode_ids = arrays.get("episode_ids")
    if episode_ids is not None:
        episode_ids = np.asarray(episode_ids)
        if episode_ids.shape != (n,):
            raise DataError(source, "episode_ids", f"has shape {episode_ids.shape}, expected {(n,)}")
        episode_ids = episode_ids.astype(np.int64)

    data = Transitions(
        **out,
        observation_space=observation_space,
        action_space=action_space,
        episode_ids=episode_ids,
        metadata=dict(metadata or {}),
    )
    _check_continuity(data, source, atol)
    return data


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1) if mask.ndim > 1 else mask)[0])


def _check_actions_in_space(actions: np.ndarray, space: gym.Space, source: str) -> None:
    if isinstance(space, gym.spaces.Discrete):
        bad = (actions < space.start) | (actions >= space.start + space.n)
        if bad.any():
            row = _first(bad)
            raise DataError(source, "actions", f"action {actions[row]} is outside {space}", row)
    elif isinstance(space, gym.spaces.Box):
        flat = actions.reshape(len(actions), -1)
        low, high = space.low.reshape(-1), space.high.reshape(-1)
        tol = 1e-6 * np.maximum(1.0, np.abs(np.where(np.isfinite(high), high, 0)))
        bad = ((flat < low - tol) | (flat > high + tol)).any(axis=1)
        if bad.any():
            row = _first(bad)
            raise DataError(source, "actions", f"action {actions[row].tolist()} is outside {space}", row)


def _check_continuity(data: Transitions, source: str, atol: float) -> None:
    """Inside an episode, row i's next observation must be row i+1's observation."""
    if len(data) < 2:
        return
    same_episode = ~data.episode_ends[:-1]
    nxt = data.next_observations[:-1].reshape(len(data) - 1, -1)
    cur = data.observations[1:].reshape(len(data) - 1, -1)
    mismatch = same_episode & ~np.isclose(nxt, cur, atol=atol, rtol=1e-5).all(axis=1)
    if mismatch.any():
        row = _first(mismatch)
        raise DataError(
            source,
            "next_observations",
            f"does not match the observation of row {row + 1} in the same episode "
            f"({data.next_observations[row].tolist()} vs {data.observations[row + 1].tolist()}); "
            "mark the episode boundary with terminations/truncations or episode_ids",
            row,
        )


def concatenate(parts: list[Transitions], source: str = "merged data", labels: list[str] | None = None) -> Transitions:
    """One dataset from several logs of the same system, episode boundaries kept.

    Each part's episodes get ids of their own, so the last episode of one part never runs into
    the first of the next. ``metadata["behaviour_policy"]`` becomes ``{"kind": "mixture",
    "parts": [...]}``: each part's own policy with its transitions, episodes, collect seed and
    label (e.g. its file name).
    Raises :class:`DataError` if the parts' spaces or source envs differ.
    """
    if not parts:
        raise DataError(source, None, "nothing to merge: give at least one dataset")
    first = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        for name in ("observation_space", "action_space"):
            if getattr(part, name) != getattr(first, name):
                raise DataError(source, name, f"part {i} has {getattr(part, name)}, part 0 has {getattr(first, name)}")
        if part.metadata.get("source_env_id") != first.metadata.get("source_env_id"):
            raise DataError(source, "source_env_id", f"part {i} logged {part.metadata.get('source_env_id')!r}, "
                            f"part 0 logged {first.metadata.get('source_env_id')!r}")
    arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in FIELDS}
    ids, offset = [], 0
    for part in parts:
        ids.append(part.episode_index() + offset)
        offset += part.num_episodes
    arrays["episode_ids"] = np.concatenate(ids)
    labels = labels or [f"part {i}" for i in range(len(parts))]
    described = [
        {**(p.metadata.get("behaviour_policy") or {"kind": "unknown"}), "transitions": len(p), "episodes": p.num_episodes,
         "collect_seed": p.metadata.get("seed"), "label": label}
        for p, label in zip(parts, labels)
    ]
    metadata = {"source_env_id": first.metadata.get("source_env_id"), "behaviour_policy": {"kind": "mixture", "parts": described}}
    return as_transitions(arrays, first.observation_space, first.action_space, source, metadata)
