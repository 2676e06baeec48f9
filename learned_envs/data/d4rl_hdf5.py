"""D4RL-style HDF5: one flat table of N rows, episodes delimited by ``terminals`` and ``timeouts``.

Datasets at the file's root:
    observations        [N, *obs_shape]
    actions             [N, *act_shape]   ([N] for Discrete)
    rewards             [N]               ([N, 1] accepted)
    terminals           [N] bool          the episode ended in a terminal state
    timeouts            [N] bool          the episode was cut by a time limit
    next_observations   [N, *obs_shape]   optional (D4RL's MuJoCo v2 files have it)
    episode_ids         [N] int           optional; written here so every boundary survives
and, in files written here, JSON attributes ``observation_space``, ``action_space``, ``metadata``.

Without ``next_observations`` a row's next observation is the following row's observation, which
is wrong across an episode boundary; so the last row of every episode (terminal, time-out, or the
file's last row) has no known next observation and is dropped, counted in
``metadata["dropped_rows"]`` and warned about. Other keys (``infos/...``, ``metadata/...``) are ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np

from learned_envs.atomic import atomic_path
from learned_envs.data.hdf5_io import open_hdf5, read_array, read_attr, require_h5py
from learned_envs.data.reading import (
    SPACE_NAMES,
    carried_metadata,
    check_flags,
    check_lengths,
    episode_numbers,
    next_from_following,
    note_dropped,
    read_metadata_json,
    read_space,
    resolve_spaces,
    validate,
)
from learned_envs.data.spaces import space_to_json
from learned_envs.data.transitions import PARTIAL_EPISODES, DataError, Transitions, check_episode_ids, renumber_partial

D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def load_d4rl_hdf5(
    path: str | os.PathLike,
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
) -> Transitions:
    """Read a D4RL-style ``.hdf5``/``.h5`` file into validated :class:`Transitions`.

    Spaces come from the file's attributes (files written by :func:`save_d4rl_hdf5`), else from
    the arguments, else they are inferred (``metadata["spaces_inferred"]``).
    """
    source = str(path)
    with open_hdf5(path, source) as fh:
        missing = [key for key in D4RL_KEYS if key not in fh]
        if missing:
            hint = ""
            if any(key.startswith("episode_") for key in fh):
                hint = "; this looks like a Minari main_data.hdf5: load its dataset folder or minari:<dataset_id>"
            raise DataError(source, missing[0], f"missing (a D4RL-style file needs {', '.join(D4RL_KEYS)}){hint}")
        raw = {key: read_array(fh, key, source) for key in D4RL_KEYS}
        for key in ("next_observations", "episode_ids"):
            value = read_array(fh, key, source, required=False)
            if value is not None:
                raw[key] = value
        # Attributes are named as such, so the user looks among attributes, not datasets.
        stored = [read_space(read_attr(fh, name), source, f"attribute {name}") for name in SPACE_NAMES]
        metadata = read_metadata_json(read_attr(fh, "metadata"), source, "attribute metadata")

    n = raw["observations"].shape[0] if raw["observations"].ndim else 0
    for key in ("rewards", "terminals", "timeouts"):
        if raw[key].ndim == 2 and raw[key].shape[1] == 1:  # some D4RL writers keep a trailing axis
            raw[key] = raw[key].reshape(-1)
    check_lengths(source, raw, n, "observations")
    terminals = check_flags(source, "terminals", raw["terminals"])
    timeouts = check_flags(source, "timeouts", raw["timeouts"])

    metadata = {**metadata, "path": source, "format": "d4rl_hdf5"}
    metadata.pop("dropped_rows", None)
    arrays = {"observations": raw["observations"], "actions": raw["actions"], "rewards": raw["rewards"],
              "terminations": terminals, "truncations": timeouts}
    if "episode_ids" in raw:
        # Checked here, not only in validation: pairing rows below renumbers episodes from these ids.
        arrays["episode_ids"] = check_episode_ids(source, raw["episode_ids"], n)
    locate = None
    if "next_observations" in raw:
        arrays["next_observations"] = raw["next_observations"]
    else:
        arrays, locate = _pair_with_following_rows(arrays, source, metadata)

    spaces = resolve_spaces(source, arrays, metadata, stored, [observation_space, action_space])
    return validate(arrays, *spaces, source, metadata, locate)


def _pair_with_following_rows(
    arrays: dict[str, np.ndarray], source: str, metadata: dict
) -> tuple[dict[str, np.ndarray], Callable[[int], str]]:
    """Rows whose next observation is the following row's: drop each episode's last row (noted)."""
    terminals, timeouts = arrays["terminations"], arrays["truncations"]
    ends = terminals | timeouts
    ids = arrays.get("episode_ids")
    if ids is not None and len(ids) > 1:
        ends = ends | np.append(ids[1:] != ids[:-1], False)
    keep, episode = next_from_following(ends), episode_numbers(ends)
    rows = np.flatnonzero(keep)
    out = {name: value[rows] for name, value in arrays.items() if name != "episode_ids"}
    out["next_observations"] = arrays["observations"][rows + 1]
    out["episode_ids"] = episode[rows]
    if PARTIAL_EPISODES in metadata and ids is not None:  # the file's own ids are renumbered, so is the list
        metadata[PARTIAL_EPISODES] = renumber_partial(ids[rows], metadata[PARTIAL_EPISODES], out["episode_ids"])
    dropped = len(keep) - len(rows)
    note_dropped(
        source,
        metadata,
        dropped,
        f"the file has no next_observations, so the last row of each episode has no known next observation "
        f"({int(terminals.sum())} terminal, {int(timeouts.sum())} time-outs, plus the file's last row); "
        "terminations cannot be learned from these data",
    )
    return out, (lambda row: f"row {int(rows[row])}")


def save_d4rl_hdf5(data: Transitions, path: str | os.PathLike) -> Path:
    """Write ``data`` as a D4RL-style HDF5 file (with ``next_observations`` and ``episode_ids``), atomically."""
    h5py = require_h5py()
    path = Path(path)
    columns = {
        "observations": data.observations,
        "actions": data.actions,
        "rewards": data.rewards,
        "terminals": data.terminations,
        "timeouts": data.truncations,
        "next_observations": data.next_observations,
        # Boundaries marked only by episode ids (not by a flag) survive only through this column.
        "episode_ids": data.row_episode_ids(),
    }
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            for name, value in columns.items():
                fh.create_dataset(name, data=value)
            fh.attrs["observation_space"] = json.dumps(space_to_json(data.observation_space))
            fh.attrs["action_space"] = json.dumps(space_to_json(data.action_space))
            fh.attrs["metadata"] = json.dumps(carried_metadata(data))
    return path
