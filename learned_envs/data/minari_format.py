"""Minari datasets, read and written through h5py alone (neither minari nor jax needed).

On disk (Minari's ``hdf5`` storage, as ``minari.load_dataset`` expects it)::

    <dataset folder>/data/metadata.json     total_episodes, total_steps, data_format "hdf5",
                                            observation_space / action_space (JSON strings in
                                            minari's serialisation), env_spec (JSON string),
                                            dataset_id, minari_version, ...
    <dataset folder>/data/main_data.hdf5    one group per episode, "episode_{id}", holding
        observations   [T+1, *obs_shape]    the T+1 observations of T steps
        actions        [T, *act_shape]
        rewards        [T]
        terminations   [T] bool
        truncations    [T] bool
        infos          group (ignored here)

A dataset is named by a folder path or by ``minari:<dataset_id>``, resolved like minari does
under ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``). Only Box and Discrete spaces
without JPEG encoding are supported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from learned_envs.data.hdf5_io import open_hdf5, read_array, require_h5py
from learned_envs.data.reading import (
    SPACE_NAMES,
    carried_metadata,
    check_lengths,
    episode_slices,
    read_space,
    resolve_spaces,
    validate,
)
from learned_envs.data.transitions import DataError, Transitions

PREFIX = "minari:"
# The minari version whose on-disk layout the writer follows (when minari itself is not installed).
LAYOUT_VERSION = "0.5.4"
_ID_RE = re.compile(r"^(?:[-_\w][-_\w/]*[-_\w]+/)?[-_\w]+?-v\d+$")
_EPISODE_RE = re.compile(r"^episode_(\d+)$")
_STEP_FIELDS = ("actions", "rewards", "terminations", "truncations")


def datasets_root() -> Path:
    """Where minari keeps local datasets: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def is_minari_source(source: str | os.PathLike) -> bool:
    """Whether ``source`` names a Minari dataset: ``minari:<id>``, its folder, or its ``data`` folder."""
    if str(source).startswith(PREFIX):
        return True
    path = Path(source)
    return (path / "data" / "main_data.hdf5").is_file() or (path / "main_data.hdf5").is_file()


def dataset_folder(source: str | os.PathLike) -> tuple[Path, str | None]:
    """The dataset folder named by ``source``, and its id when given as ``minari:<id>``."""
    text = str(source)
    if text.startswith(PREFIX):
        dataset_id = text[len(PREFIX):]
        return datasets_root() / dataset_id, dataset_id
    path = Path(source)
    if path.name == "data" and (path / "metadata.json").is_file():
        path = path.parent  # the user pointed at the data folder itself
    return path, None


def load_minari(
    source: str | os.PathLike,
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
) -> Transitions:
    """Read a Minari dataset (``minari:<id>`` or a folder) into validated :class:`Transitions`.

    Spaces come from ``metadata.json`` (its serialised spaces, else a ``gym.make`` of its
    ``env_spec``), else from the arguments, else they are inferred. ``episode_ids`` are the
    Minari episode ids.
    """
    folder, dataset_id = dataset_folder(source)
    meta_path, data_path = folder / "data" / "metadata.json", folder / "data" / "main_data.hdf5"
    if not meta_path.is_file():
        where = f" (looked under MINARI_DATASETS_PATH={datasets_root()})" if dataset_id else ""
        raise DataError(str(folder), None, f"not a Minari dataset: no data/metadata.json{where}")
    try:
        info = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(str(meta_path), None, f"not readable JSON ({exc})") from None
    except RecursionError:
        raise DataError(str(meta_path), None, "JSON nested too deeply to read") from None
    if not isinstance(info, dict):
        raise DataError(str(meta_path), None, f"must hold a JSON object, not {type(info).__name__}")
    if info.get("data_format", "hdf5") != "hdf5":
        raise DataError(str(meta_path), "data_format", f"is {info['data_format']!r}; learned-envs reads Minari's hdf5 storage only")

    source_env = _env_id(info.get("env_spec"), str(meta_path))
    stored = [read_space(info.get(name), str(meta_path), name) for name in SPACE_NAMES]
    if None in stored and source_env in gym.registry:
        env = gym.make(source_env)  # what minari itself does for a dataset without serialised spaces
        stored = [stored[0] or env.observation_space, stored[1] or env.action_space]
        env.close()

    arrays, locate = _read_episodes(data_path, info)
    metadata = info.get("learned_envs") or {}  # our own provenance, when we wrote the dataset
    if not isinstance(metadata, dict):
        raise DataError(str(meta_path), "learned_envs", f"must be a JSON object, not {type(metadata).__name__} {metadata!r}")
    metadata = dict(metadata)
    metadata.update(path=str(folder), format="minari", minari_dataset_id=info.get("dataset_id", dataset_id))
    if source_env:
        metadata["source_env_id"] = source_env
    spaces = resolve_spaces(str(data_path), arrays, metadata, stored, [observation_space, action_space])
    return validate(arrays, *spaces, str(data_path), metadata, locate)


def _read_episodes(data_path: Path, info: dict) -> tuple[dict[str, np.ndarray], Callable[[int], str]]:
    """Concatenate every ``episode_{id}`` group, in id order, into canonical row arrays."""
    source = str(data_path)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("observations", "next_observations", *_STEP_FIELDS, "episode_ids")}
    with open_hdf5(data_path, source) as fh:
        ids = sorted(int(m.group(1)) for m in map(_EPISODE_RE.match, fh.keys()) if m)
        if ids and ids[-1] >= 2**63:  # episode ids are int64 in Transitions
            raise DataError(source, f"episode_{ids[-1]}", "episode number beyond int64")
        expected = info.get("total_episodes")
        if expected is not None and expected != len(ids):
            raise DataError(source, None, f"holds {len(ids)} episode groups, but metadata.json says total_episodes={expected}")
        if not ids:
            raise DataError(source, None, "no episode_{id} groups: the dataset is empty (or not a Minari main_data.hdf5)")
        for episode_id in ids:
            name = f"episode_{episode_id}"
            group = fh[name]
            steps = {k: read_array(group, k, source, prefix=f"{name}/") for k in _STEP_FIELDS}
            obs = read_array(group, "observations", source, prefix=f"{name}/")
            t = steps["rewards"].shape[0] if steps["rewards"].ndim else 0
            check_lengths(source, steps, t, "rewards", prefix=f"{name}/")
            if len(obs) != t + 1:
                raise DataError(source, f"{name}/observations", f"has {len(obs)} rows, expected {t + 1} (one more than its {t} steps)")
            parts["observations"].append(obs[:-1])
            parts["next_observations"].append(obs[1:])
            for k in _STEP_FIELDS:
                parts[k].append(steps[k])
            parts["episode_ids"].append(np.full(t, episode_id, dtype=np.int64))
    arrays = {}
    for k, chunks in parts.items():
        shapes = {c.shape[1:] for c in chunks}
        if len(shapes) > 1:
            raise DataError(source, k, f"episodes disagree on its shape: {sorted(shapes)}")
        arrays[k] = np.concatenate(chunks)
    starts = np.concatenate([[0], np.cumsum([len(c) for c in parts["rewards"]])])

    def locate(row: int) -> str:
        episode = int(np.searchsorted(starts, row, side="right")) - 1
        return f"episode_{int(arrays['episode_ids'][row])}, step {row - int(starts[episode])}"

    return arrays, locate


def _env_id(env_spec: Any, source: str) -> str | None:
    """The env id in metadata.json's ``env_spec`` (minari writes a JSON string; an object is read
    as already decoded); ``None`` when absent or unreadable, a :class:`DataError` when not text."""
    if not env_spec:
        return None
    if isinstance(env_spec, str):
        try:
            env_spec = json.loads(env_spec)
        except (json.JSONDecodeError, RecursionError):
            return None  # minari tolerates an unreadable spec too: the spaces then come from elsewhere
    if not isinstance(env_spec, dict):
        raise DataError(source, "env_spec", f"must be a JSON object or its JSON text, not {type(env_spec).__name__} {env_spec!r:.80}")
    env_id = env_spec.get("id")
    if env_id is not None and not isinstance(env_id, str):
        raise DataError(source, "env_spec", f"its 'id' must be a string, not {env_id!r:.80}")
    return env_id


def minari_space_json(space: gym.Space) -> str:
    """``space`` in minari's own serialisation (what ``minari.serialization.serialize_space`` writes)."""
    if isinstance(space, gym.spaces.Discrete):
        return json.dumps({"type": "Discrete", "dtype": "int64", "start": int(space.start), "n": int(space.n)})
    if isinstance(space, gym.spaces.Box):
        # json writes +-inf as Infinity, as minari does; both json readers accept it.
        return json.dumps({"type": "Box", "dtype": str(space.dtype), "shape": list(space.shape),
                           "low": space.low.tolist(), "high": space.high.tolist()})
    raise TypeError(f"learned-envs writes Box and Discrete spaces, not {type(space).__name__}")


def save_minari(data: Transitions, target: str | os.PathLike) -> Path:
    """Write ``data`` as a Minari dataset at ``minari:<id>`` or a folder; returns the folder.

    The folder is built beside the target and swapped in, so a failed write leaves the old
    dataset. An existing folder is replaced only if it is a Minari dataset or empty.
    """
    h5py = require_h5py()
    folder, dataset_id = dataset_folder(target)
    if dataset_id is None:
        dataset_id = folder.name if _ID_RE.match(folder.name) else re.sub(r"[^-_\w]", "_", folder.name) + "-v0"
    elif not _ID_RE.match(dataset_id):
        raise ValueError(f"{target}: Minari dataset ids look like [namespace/]name-v<version>, e.g. cartpole/random-v0")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; a Minari dataset is a folder")
    if folder.exists() and any(folder.iterdir()) and not (folder / "data" / "metadata.json").is_file():
        raise ValueError(f"{folder} exists and is not a Minari dataset; refusing to replace it")

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        (tmp / "data").mkdir()
        total = _write_episodes(h5py, data, tmp / "data" / "main_data.hdf5")
        metadata = _metadata_json(data, dataset_id, total)
        metadata["dataset_size"] = round(sum(f.stat().st_size for f in (tmp / "data").iterdir()) / 1e6, 1)
        (tmp / "data" / "metadata.json").write_text(json.dumps(metadata))
        _swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if str(target).startswith(PREFIX):
        _mark_namespaces(dataset_id)
    return folder


def _write_episodes(h5py, data: Transitions, path: Path) -> int:
    """One ``episode_{k}`` group per episode of ``data``; returns the number of episodes."""
    obs_dtype = data.observation_space.dtype if isinstance(data.observation_space, gym.spaces.Box) else data.observations.dtype
    count = 0
    with h5py.File(path, "w", track_order=True) as fh:
        for count, rows in enumerate(episode_slices(data)):
            group = fh.create_group(f"episode_{count}")
            group.attrs["id"] = count
            group.attrs["total_steps"] = rows.stop - rows.start
            last = data.next_observations[rows.stop - 1 : rows.stop]
            group.create_dataset("observations", data=np.concatenate([data.observations[rows], last]).astype(obs_dtype))
            for name in _STEP_FIELDS:
                group.create_dataset(name, data=getattr(data, name)[rows])
            group.create_group("infos")
    return count + 1


def _metadata_json(data: Transitions, dataset_id: str, total_episodes: int) -> dict:
    try:
        import minari

        version = minari.__version__ if minari.__version__ in minari.supported_dataset_versions else LAYOUT_VERSION
    except ImportError:
        version = LAYOUT_VERSION
    metadata = {
        "dataset_id": dataset_id,
        "total_episodes": total_episodes,
        "total_steps": len(data),
        "data_format": "hdf5",
        "jpeg_encoding": False,  # observations are stored raw, never as JPEG
        "observation_space": minari_space_json(data.observation_space),
        "action_space": minari_space_json(data.action_space),
        "minari_version": version,
        "learned_envs": carried_metadata(data, written_ids=data.episode_index()),  # episode_{k} is the k-th episode
    }
    env_id = data.metadata.get("source_env_id")
    if env_id and env_id in gym.registry:
        try:
            metadata["env_spec"] = gym.spec(env_id).to_json()
        except (TypeError, ValueError):
            pass  # an env spec with unserialisable kwargs: minari itself then leaves env_spec out
    behaviour = data.metadata.get("behaviour_policy")
    if isinstance(behaviour, dict):
        metadata["algorithm_name"] = str(behaviour.get("algo") or behaviour.get("kind"))
    return metadata


def _swap_in(new: Path, folder: Path) -> None:
    """Replace ``folder`` by ``new`` with two renames, deleting the old copy only afterwards."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
        os.replace(folder, old / "dataset")
    os.replace(new, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _mark_namespaces(dataset_id: str) -> None:
    """minari lists a namespace by its ``namespace_metadata.json``; write empty ones where missing."""
    parts = dataset_id.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        marker = datasets_root().joinpath(*parts[:depth], "namespace_metadata.json")
        if not marker.exists():
            marker.write_text("{}")
