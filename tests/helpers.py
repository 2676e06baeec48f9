"""Helpers shared by several test modules (test modules never import each other)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import struct
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from learned_envs.checkpoint import _metadata_digest
from learned_envs.data.collecting import collect
from learned_envs.data.spaces import env_spaces, space_to_json  # noqa: F401  (env_spaces: used by test modules)
from learned_envs.models import EnsembleConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # the first bytes of every PNG file


def load_benchmark(name: str, module_name: str | None = None) -> ModuleType:
    """The script ``benchmarks/{name}.py`` as a module (the folder is not a package), named
    ``module_name`` (default ``name``), executed once."""
    spec = importlib.util.spec_from_file_location(module_name or name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A fit that only has to run, not to be good: a second or so.
TINY_FIT = dict(model=EnsembleConfig(hidden_size=16, num_layers=1, ensemble_size=2), num_elites=1, max_updates=30,
                min_updates=0, eval_every=10, patience=10, termination_max_updates=30)


@pytest.fixture(scope="module")
def good():
    """120 random-policy CartPole-v1 transitions (import this fixture where it is used)."""
    return collect("CartPole-v1", 120, seed=3, progress=False)


@contextlib.contextmanager
def only_expected_checker_warnings() -> Iterator[None]:
    """Run the env checkers with every warning an error except the ones a dream is expected to
    raise: infinite observation bounds, which the source envs' own spaces have (CartPole), and
    pygame's own deprecation notices when a frame is drawn. An observation outside the space, a
    wrong dtype or a non-determinism warning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=r".*A Box observation space (minimum|maximum) value is -?infinity")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pygame.*")
        # SB3's checker says this of any Box action space but [-1, 1]; the source env's own space
        # (Pendulum's [-2, 2]) is what a dream must keep, so the advice does not apply.
        warnings.filterwarnings("ignore", message=r".*we recommend using a symmetric and normalized space")
        yield




def write_raw_npz(path: Path, data, **changes: Any) -> Path:
    """Write ``data`` as a transitions npz with some arrays replaced (``None`` drops one), bypassing validation."""
    arrays = {
        "observations": data.observations,
        "actions": data.actions,
        "rewards": data.rewards,
        "next_observations": data.next_observations,
        "terminations": data.terminations,
        "truncations": data.truncations,
        "observation_space": np.array(json.dumps(space_to_json(data.observation_space))),
        "action_space": np.array(json.dumps(space_to_json(data.action_space))),
    }
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(path, **arrays)
    return path


def write_d4rl(path: Path, data, drop: tuple[str, ...] = (), **changes: Any) -> Path:
    """A D4RL-style file with some columns replaced or dropped, bypassing validation."""
    import h5py

    columns = {"observations": data.observations, "actions": data.actions, "rewards": data.rewards,
               "terminals": data.terminations, "timeouts": data.truncations, "next_observations": data.next_observations}
    columns.update(changes)
    with h5py.File(path, "w") as fh:
        for name, value in columns.items():
            if name not in drop:
                fh.create_dataset(name, data=value)
    return path


def rewrite_metadata(src: Path, dst: Path, edit: Callable[[dict], Any], digest: str = "keep") -> Path:
    """Copy ``src`` to ``dst`` with its metadata edited in place by ``edit`` (or replaced by what
    ``edit`` returns), tensor bytes untouched. ``digest``: ``"keep"`` the stored metadata digest
    (an edit by hand), ``"drop"`` it (a file saved before the digest existed), or ``"restamp"`` it
    (a writer that got the metadata wrong)."""
    raw = Path(src).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["learned_envs"])
    replaced = edit(meta)
    meta = meta if replaced is None else replaced
    if digest != "keep" and isinstance(meta, dict):
        meta.pop("metadata_sha256", None)
        if digest == "restamp":
            meta["metadata_sha256"] = _metadata_digest(meta)
    header["__metadata__"]["learned_envs"] = meta if isinstance(meta, str) else json.dumps(meta)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    Path(dst).write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])
    return Path(dst)


def rewrite_tensors(src: Path, dst: Path, edit: Callable[[dict[str, np.ndarray]], Any]) -> Path:
    """Copy the checkpoint ``src`` to ``dst`` with its tensors edited in place by ``edit`` and
    every digest stamped afresh: a file as a careless or hostile writer would make it, which
    only the value checks can refuse."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    from learned_envs.checkpoint import METADATA_KEY, write_tensors

    tensors = load_file(str(src))
    with safe_open(str(src), framework="numpy") as f:
        meta = json.loads(f.metadata()[METADATA_KEY])
    edit(tensors)
    return write_tensors(dst, tensors, meta)
