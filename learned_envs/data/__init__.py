"""Logged data: the canonical :class:`Transitions`, its readers and writers, and ``collect``.

``load(source)`` and ``save(data, target)`` pick the format from the argument:

=========  ==========================================  ===============================
format     names                                        module
=========  ==========================================  ===============================
npz        ``*.npz``                                    :mod:`learned_envs.data.npz`
hdf5       ``*.hdf5``, ``*.h5`` (D4RL-style)            :mod:`learned_envs.data.d4rl_hdf5`
sb3        ``*.pkl`` (SB3 replay buffer; trusted only)  :mod:`learned_envs.data.sb3_buffer`
minari     ``minari:<dataset_id>`` or a dataset folder  :mod:`learned_envs.data.minari_format`
=========  ==========================================  ===============================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import gymnasium as gym

from learned_envs.data.npz import load_npz, save_npz
from learned_envs.data.reading import DataWarning
from learned_envs.data.transitions import DataError, Transitions, as_transitions, concatenate

__all__ = ["DataError", "DataWarning", "Transitions", "as_transitions", "concatenate", "load", "save", "format_of", "target_format",
           "source_sha256",
           "resolved_source", "FORMATS",
           "load_npz", "save_npz", "collect"]

FORMATS = ("npz", "minari", "hdf5", "sb3")
_SUFFIXES = {".npz": "npz", ".hdf5": "hdf5", ".h5": "hdf5", ".pkl": "sb3"}


def format_of(source: str | os.PathLike) -> str | None:
    """The format ``source`` names (one of :data:`FORMATS`), or ``None`` if it names none."""
    from learned_envs.data.minari_format import PREFIX, is_minari_source

    text = str(source)
    if text.startswith(PREFIX) or is_minari_source(source):
        return "minari"
    path = Path(source)
    if path.name == "main_data.hdf5" and (path.parent / "metadata.json").is_file():
        return "minari"  # a Minari dataset's data file: read the whole dataset
    if path.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[path.suffix.lower()]
    if path.is_dir() or (not path.exists() and not path.suffix):
        return "minari"  # a folder (existing, or to be written) can only be a Minari dataset
    return None


def load(
    source: str | os.PathLike,
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
) -> Transitions:
    """Read logged transitions from ``source`` (see the table above), validated.

    Spaces come from the data's own metadata, else from the arguments (e.g. ``--source-env``),
    else they are inferred and ``metadata["spaces_inferred"]`` lists which.
    """
    fmt = format_of(source)
    if fmt is None:
        raise DataError(str(source), None, f"unknown data format {Path(source).suffix!r}: expected .npz, .hdf5/.h5, .pkl, "
                        "a Minari dataset folder or minari:<dataset_id>")
    if fmt == "minari" and Path(source).name == "main_data.hdf5":
        source = Path(source).parent.parent
    return _reader(fmt)(source, observation_space, action_space)


def save(data: Transitions, target: str | os.PathLike, format: str | None = None) -> Path:
    """Write ``data`` to ``target`` in ``format`` (default: the one ``target`` names); returns the path written."""
    return _writer(target_format(target, format))(data, target)


def target_format(target: str | os.PathLike, format: str | None = None) -> str:
    """The format to write ``target`` in; a ``ValueError`` if ``format`` and ``target`` disagree."""
    named = format_of(target)
    fmt = format or named
    if fmt not in FORMATS:
        raise ValueError(f"{target}: unknown data format {Path(target).suffix!r}: expected .npz, .hdf5/.h5, .pkl, "
                         "a folder or minari:<dataset_id>")
    # A folder name may hold a dot; a file in another format than its suffix says could not be read back.
    if named != fmt and not (named is None and fmt == "minari"):
        what = f"names the {named} format" if named else "has no suffix of a data format"
        raise ValueError(f"{target}: {what}, not {fmt}; give a target like {_EXAMPLES[fmt]}")
    return fmt


def source_sha256(source: str | os.PathLike) -> str:
    """sha256 of the bytes behind ``source``: the file itself, or for a Minari dataset (a folder or
    ``minari:<id>``) its ``data/metadata.json`` then ``data/main_data.hdf5``."""
    import hashlib

    if format_of(source) == "minari":
        from learned_envs.data.minari_format import dataset_folder

        data_dir = dataset_folder(source)[0] / "data"
        files = [data_dir / "metadata.json", data_dir / "main_data.hdf5"]
    else:
        files = [Path(source)]
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def resolved_source(source: str | os.PathLike | None) -> str | None:
    """``source`` as an absolute, resolved path (what provenance records, so it still names the
    data from another folder); a ``minari:<dataset_id>`` names a dataset, not a path, and stays."""
    from learned_envs.data.minari_format import PREFIX

    if source is None or str(source).startswith(PREFIX):
        return None if source is None else str(source)
    return str(Path(source).expanduser().resolve())


_EXAMPLES = {"npz": "data.npz", "hdf5": "data.hdf5", "sb3": "buffer.pkl", "minari": "minari:cartpole/random-v0 or a folder"}


def _reader(fmt: str) -> Callable[..., Transitions]:
    # Imported on use: h5py is optional, and SB3 pulls in torch.
    if fmt == "npz":
        return load_npz
    if fmt == "hdf5":
        from learned_envs.data.d4rl_hdf5 import load_d4rl_hdf5

        return load_d4rl_hdf5
    if fmt == "sb3":
        from learned_envs.data.sb3_buffer import load_sb3_buffer

        return load_sb3_buffer
    from learned_envs.data.minari_format import load_minari

    return load_minari


def _writer(fmt: str) -> Callable[[Transitions, str | os.PathLike], Path]:
    if fmt == "npz":
        return save_npz
    if fmt == "hdf5":
        from learned_envs.data.d4rl_hdf5 import save_d4rl_hdf5

        return save_d4rl_hdf5
    if fmt == "sb3":
        from learned_envs.data.sb3_buffer import save_sb3_buffer

        return save_sb3_buffer
    from learned_envs.data.minari_format import save_minari

    return save_minari


def collect(*args, **kwargs) -> Transitions:
    """See :func:`learned_envs.data.collecting.collect`."""
    from learned_envs.data.collecting import collect as _collect

    return _collect(*args, **kwargs)
