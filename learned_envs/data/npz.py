"""Transitions in a ``.npz`` file: the arrays of :mod:`transitions` plus JSON for spaces and provenance.

Read with ``allow_pickle=False``: a data file never runs code.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path

import gymnasium as gym
import numpy as np

from learned_envs.atomic import atomic_path
from learned_envs.data.reading import SPACE_NAMES, carried_metadata, read_metadata_json, read_space, resolve_spaces
from learned_envs.data.spaces import space_to_json
from learned_envs.data.transitions import FIELDS, DataError, Transitions, as_transitions


def save_npz(data: Transitions, path: str | os.PathLike) -> Path:
    """Write ``data`` atomically; returns the path written."""
    arrays = {name: getattr(data, name) for name in FIELDS}
    arrays["episode_ids"] = data.row_episode_ids()
    arrays["observation_space"] = np.array(json.dumps(space_to_json(data.observation_space)))
    arrays["action_space"] = np.array(json.dumps(space_to_json(data.action_space)))
    arrays["metadata"] = np.array(json.dumps(carried_metadata(data)))
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return path


def load_npz(
    path: str | os.PathLike,
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
) -> Transitions:
    """Read and validate a transitions ``.npz``.

    Spaces come from the file; if it has none, from the arguments (e.g. from ``--source-env``);
    failing both, they are inferred from the data and ``metadata["spaces_inferred"]`` says so.
    A given space of another kind or shape than the file's is a :class:`DataError`.
    """
    source = str(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare array (.npy) under an .npz name
            raise DataError(source, None, f"holds a single {type(loaded).__name__} (a .npy file?), not an .npz archive of named arrays")
        with loaded as npz:
            arrays = {k: npz[k] for k in npz.files}
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(source, None, "no such file") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as exc:  # zlib: a corrupted compressed member
        raise DataError(source, None, f"not a readable .npz file ({exc})") from None

    metadata = read_metadata_json(arrays.pop("metadata", None), source)
    stored = [read_space(arrays.pop(name, None), source, name) for name in SPACE_NAMES]
    metadata.update(path=source, format="npz")
    observation_space, action_space = resolve_spaces(source, arrays, metadata, stored, [observation_space, action_space])
    return as_transitions(arrays, observation_space, action_space, source, metadata)
