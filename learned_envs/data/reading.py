"""What every reader and writer shares: space resolution, length checks, rows whose next
observation is only known from the following row, and validation that says where a bad row
came from in the original file.
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence

import gymnasium as gym
import numpy as np

from learned_envs.data.spaces import space_from_json
from learned_envs.data.transitions import PARTIAL_EPISODES, DataError, Transitions, as_transitions, renumber_partial

SPACE_NAMES = ("observation_space", "action_space")


class DataWarning(UserWarning):
    """Data was read, but something about it needs the user's attention (rows dropped, flags ambiguous)."""


def warn_data(source: str, message: str) -> None:
    """Warn about ``source``; the message also goes to the data's metadata by the caller."""
    warnings.warn(f"{source}: {message}", DataWarning, stacklevel=3)


def resolve_spaces(
    source: str,
    arrays: Mapping[str, np.ndarray],
    metadata: dict[str, Any],
    stored: Sequence[gym.Space | None],
    given: Sequence[gym.Space | None],
) -> tuple[gym.Space, gym.Space]:
    """Pick the observation and action spaces.

    The dataset's own spaces (``stored``) win; the caller's (``given``, e.g. from
    ``--source-env``) fill gaps; whatever is still missing is inferred from ``arrays`` and
    listed in ``metadata["spaces_inferred"]``. A given space of another kind or shape than the
    stored one is a :class:`DataError`: the data cannot be both.
    """
    chosen: list[gym.Space | None] = []
    for name, own, arg in zip(SPACE_NAMES, stored, given):
        if own is not None and arg is not None and own != arg:
            if type(own) is not type(arg) or own.shape != arg.shape or getattr(own, "n", None) != getattr(arg, "n", None):
                raise DataError(source, name, f"the data's own {name} is {own}, but {arg} was given (e.g. by --source-env)")
            warn_data(source, f"using the data's own {name} {own}, not the given {arg} (they differ in bounds or dtype)")
        chosen.append(own if own is not None else arg)
    if chosen[0] is None or chosen[1] is None:
        from learned_envs.data.infer import infer_spaces

        inferred = infer_spaces(dict(arrays), source)
        names = [name for name, space in zip(SPACE_NAMES, chosen) if space is None]
        chosen = [space if space is not None else guess for space, guess in zip(chosen, inferred)]
        metadata["spaces_inferred"] = names
    return chosen[0], chosen[1]


def check_lengths(source: str, arrays: Mapping[str, np.ndarray], expected: int, reference: str, prefix: str = "") -> None:
    """Every array in ``arrays`` must have ``expected`` rows (those of field ``reference``)."""
    for name, value in arrays.items():
        rows = value.shape[0] if np.ndim(value) else 0
        if rows != expected:
            raise DataError(source, prefix + name, f"has {rows} rows, but '{prefix + reference}' has {expected}")


def check_flags(source: str, name: str, values: np.ndarray, locate: Callable[[int], str] | None = None) -> np.ndarray:
    """``values [N]`` (bool, 0/1 ints or floats) as bool; anything else is a :class:`DataError` at its first row.

    ``locate(i)`` says where element ``i`` of ``values`` sits in the file, for values gathered
    out of file order (e.g. one env's rows of a wrapped replay buffer); the error then names
    that place, since ``i`` is no row the user could look up.
    """
    values = np.asarray(values)
    bad = ~np.isin(values, (0, 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        message = f"value {values[row].item()!r} is not a boolean"
        if locate is None:
            raise DataError(source, name, message, row)
        raise DataError(source, name, f"{message} (in the file: {locate(row)})")
    return values.astype(bool)


def read_json(raw: Any, source: str, name: str) -> Any:
    """Decode the JSON text ``raw`` (str, bytes or a 0-d numpy string) stored as field ``name``
    of ``source``; text that is not JSON is a :class:`DataError` naming both."""
    if isinstance(raw, np.ndarray) and raw.ndim == 0:
        raw = raw.item()
    try:
        return json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(source, name, f"is not valid JSON ({exc})") from None
    except RecursionError:
        raise DataError(source, name, "is JSON nested too deeply to read") from None


def read_metadata_json(raw: Any, source: str, name: str = "metadata") -> dict[str, Any]:
    """Provenance stored as JSON text: must decode to an object (``{}`` when ``raw`` is ``None``)."""
    if raw is None:
        return {}
    metadata = read_json(raw, source, name)
    if not isinstance(metadata, dict):
        raise DataError(source, name, f"must be a JSON object, not {type(metadata).__name__} {metadata!r}")
    return metadata


def read_space(raw: Any, source: str, name: str) -> gym.Space | None:
    """The space described by ``raw`` (JSON text or an already decoded dict) in field ``name``
    of ``source``, ``None`` when absent; a bad description is a :class:`DataError` naming both."""
    if raw is None:
        return None
    spec = raw if isinstance(raw, dict) else read_json(raw, source, name)
    try:
        return space_from_json(spec)
    except ValueError as exc:
        raise DataError(source, name, str(exc)) from None


def validate(
    arrays: Mapping[str, np.ndarray],
    observation_space: gym.Space,
    action_space: gym.Space,
    source: str,
    metadata: dict[str, Any],
    locate: Callable[[int], str] | None = None,
) -> Transitions:
    """:func:`as_transitions`, with the first bad row also located in the original file.

    ``locate(row)`` describes where row ``row`` of the canonical arrays came from (e.g.
    ``"episode_3, step 7"``), for formats whose rows are reordered or filtered on the way in.
    """
    try:
        return as_transitions(dict(arrays), observation_space, action_space, source, metadata)
    except DataError as exc:
        if locate is None or exc.row is None:
            raise
        raise DataError(source, exc.field, f"{exc.message} (in the file: {locate(exc.row)})", exc.row) from None


def episode_numbers(ends: np.ndarray) -> np.ndarray:
    """``[T] int64``: the episode number (0, 1, ...) of every row of a stream whose episode ends are ``ends [T] bool``."""
    ends = np.asarray(ends, dtype=bool)
    return np.concatenate([np.zeros(min(len(ends), 1), np.int64), np.cumsum(ends[:-1], dtype=np.int64)])


def next_from_following(ends: np.ndarray, invalid: np.ndarray | None = None, last_has_next: bool = False) -> np.ndarray:
    """``keep [T] bool`` for a stream of T rows in time order whose file keeps no next observations.

    Row i's next observation is row i+1's observation, except where row i ends an episode
    (``ends [T] bool``: the next row starts another one) or is the last row (unless
    ``last_has_next``); those rows, and rows flagged ``invalid [T] bool``, have no known next
    observation and are to be dropped. Number episodes with :func:`episode_numbers` on the full
    stream first, so kept rows on either side of a dropped end row fall in different episodes.
    """
    keep = ~np.asarray(ends, dtype=bool)
    if len(keep):
        keep[-1] = last_has_next
    if invalid is not None:
        keep &= ~invalid
    return keep


def note_dropped(source: str, metadata: dict[str, Any], count: int, reason: str) -> None:
    """Record (``metadata["dropped_rows"]``) and warn that ``count`` rows were left out, and why."""
    if count <= 0:
        return
    metadata["dropped_rows"] = {"count": int(count), "reason": reason}
    warn_data(source, f"dropped {count} rows: {reason}")


def episode_slices(data: Transitions) -> Iterator[slice]:
    """The row range of every episode of ``data``, in order."""
    ends = np.flatnonzero(data.episode_ends)
    start = 0
    for end in ends:
        yield slice(start, int(end) + 1)
        start = int(end) + 1


def flagless_ends(data: Transitions) -> np.ndarray:
    """``[N] bool``: episode ends marked by neither termination nor truncation (only by
    ``episode_ids`` or by being the last row). Formats without episode ids must mark them somehow."""
    return data.episode_ends & ~data.terminations & ~data.truncations


def carried_metadata(data: Transitions, written_ids: np.ndarray | None = None) -> dict[str, Any]:
    """``data.metadata`` without the keys a reader sets afresh (where the data was read from).

    ``written_ids [N]``: the episode ids the file will give the rows back with, for writers that
    store none of their own (the partial-episode list is renumbered to match them).
    """
    carried = {k: v for k, v in data.metadata.items() if k not in ("path", "dropped_rows")}
    if written_ids is not None and PARTIAL_EPISODES in carried:
        carried[PARTIAL_EPISODES] = renumber_partial(data.row_episode_ids(), carried[PARTIAL_EPISODES], written_ids)
    return carried
