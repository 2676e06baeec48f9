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
    episode_ids        [N]               int64, optional (derived from the flags when absent);
                                         whole numbers, each episode's rows contiguous

An episode ends at a row whose termination or truncation is true.

``metadata["partial_episodes"]`` (optional, any reader may set it) lists the ids of episodes
that began before the data's first row of them (e.g. the oldest episode kept in a wrapped
replay buffer): their rows are real transitions, but their first row is not a real start.
"Ids" are values of ``episode_ids``, or of :meth:`Transitions.episode_index` when it is absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")
PARTIAL_EPISODES = "partial_episodes"  # metadata key: ids of episodes whose start is not in the data


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

    def row_episode_ids(self) -> np.ndarray:
        """``[N] int64``: each row's episode id, ``episode_ids`` or, when absent, :meth:`episode_index`."""
        return self.episode_ids if self.episode_ids is not None else self.episode_index()

    def partial_starts(self) -> np.ndarray:
        """``[N] bool``: the first row of every episode listed in ``metadata["partial_episodes"]``,
        a mid-episode state rather than a real start."""
        return partial_first_rows(self.row_episode_ids(), self.metadata.get(PARTIAL_EPISODES))

    def episode_starts(self, include_partial: bool = True) -> np.ndarray:
        """``[E, *obs_shape]``: the first observation of every episode; with
        ``include_partial=False``, only of episodes that really start in the data."""
        first = np.concatenate([[True], self.episode_ends[:-1]])
        if not include_partial:
            first &= ~self.partial_starts()
        return self.observations[first]

    def select(self, rows: np.ndarray) -> "Transitions":
        """A copy holding only ``rows`` (a bool mask or index array), spaces and metadata kept."""
        ids = self.row_episode_ids()[rows]
        metadata = dict(self.metadata)
        if PARTIAL_EPISODES in metadata:  # ids stay as they were, so only those no longer present go
            metadata[PARTIAL_EPISODES] = [i for i in metadata[PARTIAL_EPISODES] if np.any(ids == i)]
        return Transitions(
            *(getattr(self, f)[rows] for f in FIELDS),
            observation_space=self.observation_space,
            action_space=self.action_space,
            episode_ids=ids,
            metadata=metadata,
        )


def first_of_runs(ids: np.ndarray) -> np.ndarray:
    """``[N] bool``: rows whose id differs from the previous row's (each run's first row)."""
    ids = np.asarray(ids)
    return np.concatenate([[True], ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, bool)


def partial_first_rows(ids: np.ndarray, listed: Any) -> np.ndarray:
    """``[N] bool``: the first row carrying each id in ``listed`` (ids of partial episodes), for
    ``ids [N]`` whose episodes are contiguous (so an id's first row is where its episode begins here)."""
    return first_of_runs(ids) & np.isin(ids, np.asarray(listed or [], dtype=np.int64))


def renumber_partial(ids: np.ndarray, listed: Any, new_ids: np.ndarray) -> list[int]:
    """The partial episodes ``listed`` (ids in ``ids [N]``) as ids of ``new_ids [N]``, for code
    that renumbers episodes (merging, writers that store no ids). Rows must stay aligned."""
    return sorted({int(i) for i in np.asarray(new_ids)[partial_first_rows(ids, listed)]})


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
                if value.dtype.kind in "fu" and (np.abs(value) >= 2.0**63).any():  # would wrap around in int64
                    raise DataError(source, name, "discrete action beyond int64", _first(np.abs(value) >= 2.0**63))
                value = value.astype(np.int64)
            else:
                value = _as_float32(value, source, name, n)
        out[name] = value

    _check_actions_in_space(out["actions"], action_space, source)
    metadata = dict(metadata or {})
    _check_provenance(metadata, source)

    episode_ids = arrays.get("episode_ids")
    if episode_ids is not None:
        episode_ids = check_episode_ids(source, episode_ids, n)

    data = Transitions(
        **out,
        observation_space=observation_space,
        action_space=action_space,
        episode_ids=episode_ids,
        metadata=metadata,
    )
    _check_partial_episodes(data, source)
    _check_continuity(data, source, atol)
    return data


# Largest magnitude of a logged value. Fitting standardises every field in float32, summing
# squares over up to ~1e8 rows: 1e8 * (1e15)^2 = 1e38 stays below float32's max (3.4e38). Beyond
# it a fit would make inf/NaN weights; no real system logs such values (they are unit errors).
MAX_ABS_VALUE = 1e15


def _as_float32(value: np.ndarray, source: str, name: str, n: int) -> np.ndarray:
    """``value [n, ...]`` as float32, or a :class:`DataError` at the first row whose value is
    not finite, or too large to fit (checked after the cast: float64 values past float32's
    range become inf there)."""
    with np.errstate(over="ignore"):  # overflow is what the check below reports
        cast = value.astype(np.float32)
    rows = cast.reshape(n, -1)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        row = _first(bad)
        what = "is NaN or infinite" if not np.isfinite(value.reshape(n, -1)[row]).all() else "is beyond float32's range (inf once cast)"
        raise DataError(source, name, what, row)
    bad = (np.abs(rows) > MAX_ABS_VALUE).any(axis=1)
    if bad.any():
        row = _first(bad)
        raise DataError(source, name, f"value {float(np.abs(rows[row]).max()):.3g} is beyond +-{MAX_ABS_VALUE:g}, too large "
                        "to fit a model on in float32 (rescale the data)", row)
    return cast


def _check_provenance(metadata: dict[str, Any], source: str) -> None:
    """Provenance that later code relies on: the source env id is a string (it becomes a
    Gymnasium id and a checkpoint field), the behaviour policy a JSON object."""
    env_id = metadata.get("source_env_id")
    if env_id is not None and not isinstance(env_id, str):
        raise DataError(source, "metadata source_env_id",
                        f"must be a string (a Gymnasium env id), not {type(env_id).__name__} {env_id!r:.80}")
    policy = metadata.get("behaviour_policy")
    if policy is not None and not isinstance(policy, dict):
        raise DataError(source, "metadata behaviour_policy", f"must be a JSON object, not {type(policy).__name__} {policy!r:.80}")


def check_episode_ids(source: str, ids: Any, n: int) -> np.ndarray:
    """``ids [n]`` as int64, or a :class:`DataError` at the first bad row.

    Ids must be finite whole numbers (a NaN cast to int64 would become one huge id and split
    episodes silently), and each episode's rows contiguous: an id that comes back after another
    episode's rows would make interleaved rows one-step episodes and skip the continuity check.
    """
    ids = np.asarray(ids)
    if ids.shape != (n,):
        raise DataError(source, "episode_ids", f"has shape {ids.shape}, expected {(n,)}")
    if ids.dtype.kind not in "iuf":
        raise DataError(source, "episode_ids", f"has dtype {ids.dtype}, expected integers")
    if ids.dtype.kind == "f":
        bad = ~np.isfinite(ids)
        if bad.any():
            raise DataError(source, "episode_ids", "is NaN or infinite", _first(bad))
        bad = (ids != np.round(ids)) | (np.abs(ids) >= 2.0**63)
        if bad.any():
            row = _first(bad)
            raise DataError(source, "episode_ids", f"value {ids[row].item()!r} is not a whole number", row)
    ids = ids.astype(np.int64)
    run_starts = np.flatnonzero(first_of_runs(ids))
    run_ids = ids[run_starts]
    repeated = np.ones(len(run_ids), bool)
    repeated[np.unique(run_ids, return_index=True)[1]] = False  # each id's first run is fine
    if repeated.any():
        k = int(np.flatnonzero(repeated)[0])
        row, earlier = int(run_starts[k]), int(np.flatnonzero(run_ids[:k] == run_ids[k])[-1])
        raise DataError(source, "episode_ids", f"episode id {ids[row]} comes back after other episodes' rows (its earlier rows "
                        f"end at row {int(run_starts[earlier + 1]) - 1}); each episode's rows must be contiguous, in time order", row)
    return ids


def _check_partial_episodes(data: Transitions, source: str) -> None:
    """``metadata["partial_episodes"]`` must list ids the data carries (a stale list would keep
    a mid-episode state in, or a real start out of, a dream's start states)."""
    listed = data.metadata.get(PARTIAL_EPISODES)
    if listed is None:
        return
    if not isinstance(listed, (list, tuple)) or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in listed):
        raise DataError(source, f"metadata {PARTIAL_EPISODES}", f"must be a list of episode ids, not {listed!r}")
    absent = sorted(set(int(i) for i in listed) - set(np.unique(data.row_episode_ids()).tolist()))
    if absent:
        raise DataError(source, f"metadata {PARTIAL_EPISODES}", f"lists episode ids {absent} that no row carries")
    data.metadata[PARTIAL_EPISODES] = sorted(int(i) for i in listed)


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
    for i, part in enumerate(parts):
        _check_provenance(part.metadata, f"{source} (part {i})")
    for i, part in enumerate(parts[1:], start=1):
        for name in ("observation_space", "action_space"):
            if getattr(part, name) != getattr(first, name):
                raise DataError(source, name, f"part {i} has {getattr(part, name)}, part 0 has {getattr(first, name)}")
        if part.metadata.get("source_env_id") != first.metadata.get("source_env_id"):
            raise DataError(source, "source_env_id", f"part {i} logged {part.metadata.get('source_env_id')!r}, "
                            f"part 0 logged {first.metadata.get('source_env_id')!r}")
    arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in FIELDS}
    ids, partial, offset = [], [], 0
    for part in parts:
        ids.append(part.episode_index() + offset)
        partial += renumber_partial(part.row_episode_ids(), part.metadata.get(PARTIAL_EPISODES), ids[-1])
        offset += part.num_episodes
    arrays["episode_ids"] = np.concatenate(ids)
    labels = labels or [f"part {i}" for i in range(len(parts))]
    described = [
        {**(p.metadata.get("behaviour_policy") or {"kind": "unknown"}), "transitions": len(p), "episodes": p.num_episodes,
         "collect_seed": p.metadata.get("seed"), "label": label}
        for p, label in zip(parts, labels)
    ]
    metadata = {"source_env_id": first.metadata.get("source_env_id"), "behaviour_policy": {"kind": "mixture", "parts": described}}
    if partial:
        metadata[PARTIAL_EPISODES] = partial
    return as_transitions(arrays, first.observation_space, first.action_space, source, metadata)
