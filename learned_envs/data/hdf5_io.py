"""Opening HDF5 files and reading their arrays with errors that name file and field.

h5py is an optional dependency (extras ``hdf5`` and ``minari``); it is imported only here.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from learned_envs.data.transitions import DataError


def require_h5py():
    """Import h5py, or say which extra installs it."""
    try:
        import h5py
    except ImportError:
        raise ImportError("reading or writing HDF5 data needs h5py: pip install 'learned-envs[hdf5]'") from None
    return h5py


@contextlib.contextmanager
def open_hdf5(path: str | os.PathLike, source: str) -> Iterator[Any]:
    """Open ``path`` read-only as an ``h5py.File``; a missing or non-HDF5 file is a :class:`DataError`."""
    h5py = require_h5py()
    path = Path(path)
    if not path.is_file():
        raise DataError(source, None, "no such file")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(source, None, f"not a readable HDF5 file ({exc})") from None
    with handle:
        yield handle


def read_array(group: Any, name: str, source: str, prefix: str = "", required: bool = True) -> np.ndarray | None:
    """``group[name]`` as a numpy array; missing (when ``required``) or not an array is a :class:`DataError`.

    ``prefix`` (e.g. ``"episode_3/"``) makes the field in error messages the full HDF5 path.
    """
    h5py = require_h5py()
    if name not in group:
        if not required:
            return None
        raise DataError(source, prefix + name, "missing")
    item = group[name]
    if not isinstance(item, h5py.Dataset):
        raise DataError(source, prefix + name,
                        "is an HDF5 group, not an array (Dict/Tuple spaces are not supported: only Box and Discrete)")
    value = item[()]
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        raise DataError(source, prefix + name, f"holds {getattr(value, 'dtype', type(value).__name__)}, not numbers")
    return value


def read_attr(handle: Any, name: str) -> Any:
    """The HDF5 attribute ``name`` of ``handle`` as stored (``None`` when absent), for
    :func:`~learned_envs.data.reading.read_json` and friends to decode with file and field named."""
    return handle.attrs[name] if name in handle.attrs else None
