"""The single-file dream artifact: one ``.safetensors`` file, never a pickle.

Tensors:
    ``model.*``        world-model weights and normaliser statistics
    ``start_states``   ``[S, D]`` logged episode starts (the dream's reset distribution)
    ``obs_low``, ``obs_high``  ``[D]`` the bounds of every logged observation (the dream's support,
                       widened by its ``bounds_margin`` knob)
Metadata: JSON under the single key ``"learned_envs"`` (see :func:`build_metadata`), including two
digests that catch edited or corrupted files: ``tensor_sha256`` over every tensor's bytes and
``metadata_sha256`` over the canonical JSON of the rest of the metadata (``tensor_sha256``
included). Files written before ``metadata_sha256`` existed still load; only their tensors are
verified. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from learned_envs.atomic import atomic_path
from learned_envs.data.spaces import flat_dim, space_from_json, space_to_json
from learned_envs.dream_settings import DreamSettings
from learned_envs.version import __version__

FORMAT_NAME = "learned-envs-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "learned_envs"
METADATA_DIGEST_KEY = "metadata_sha256"
TENSOR_DIGEST_KEY = "tensor_sha256"

_NONE = type(None)
_JSON_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "whole number", float: "number", _NONE: "null"}
# The metadata a reader relies on: (dotted key, accepted JSON types, required). A parent comes
# before its children, so a child is only looked up inside a parent already known to be an object.
_SCHEMA: tuple[tuple[str, tuple[type, ...], bool], ...] = (
    ("model", (dict,), True),
    ("model.family", (str,), True),
    ("model.config", (dict,), True),
    ("model.config.obs_dim", (int,), True),
    ("model.config.action_dim", (int,), True),
    ("model.config.discrete_actions", (bool,), True),
    ("observation_space", (dict,), True),
    ("action_space", (dict,), True),
    ("source_env_id", (str, _NONE), True),
    ("dream", (dict,), True),
    ("dream.id", (str, _NONE), False),
    ("dream.max_episode_steps", (int, _NONE), False),
    ("dataset", (dict,), True),
    ("fit", (dict,), True),
    ("fit.metrics", (dict,), False),
    (TENSOR_DIGEST_KEY, (str,), True),
    (METADATA_DIGEST_KEY, (str,), False),
)
# What space_from_json may raise for a malformed description (ValueError; older versions of it also
# let numpy's and Gymnasium's own errors through, e.g. the assert in Discrete(0)).
_SPACE_ERRORS = (KeyError, TypeError, ValueError, AssertionError, OverflowError)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message says which file and why."""


@dataclass
class Checkpoint:
    """A loaded dream: the model plus everything the environment needs to run it."""

    path: Path
    metadata: dict[str, Any]
    model: Any  # EnsembleWorldModel (typed loosely to keep torch out of header-only readers)
    start_states: Any  # torch.Tensor [S, D]
    obs_low: Any  # torch.Tensor [D]
    obs_high: Any  # torch.Tensor [D]

    @property
    def observation_space(self) -> gym.Space:
        return space_from_json(self.metadata["observation_space"])

    @property
    def action_space(self) -> gym.Space:
        return space_from_json(self.metadata["action_space"])

    def bounds(self, margin: float):
        """The dream's support ``(low, high)``, each ``[D]``: the observed bounds widened by
        ``margin`` times the observed range on each side, kept inside the observation space."""
        import torch

        pad = margin * (self.obs_high - self.obs_low)
        low, high = self.obs_low - pad, self.obs_high + pad
        space = self.observation_space
        if isinstance(space, gym.spaces.Box):
            low = torch.maximum(low, torch.as_tensor(space.low.reshape(-1), dtype=low.dtype, device=low.device))
            high = torch.minimum(high, torch.as_tensor(space.high.reshape(-1), dtype=high.dtype, device=high.device))
        return low, high


def _digest(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _metadata_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the metadata minus its own digest, as canonical JSON (sorted keys, no spaces),
    so the digest depends on the values only, not on how a writer ordered or spaced them."""
    body = {k: v for k, v in meta.items() if k != METADATA_DIGEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    model,
    start_states: np.ndarray,
    obs_low: np.ndarray,
    obs_high: np.ndarray,
    metadata: dict[str, Any],
) -> Path:
    """Write the artifact atomically. ``metadata`` is the dict of :func:`build_metadata`."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}
    tensors["start_states"] = np.ascontiguousarray(start_states, dtype=np.float32)
    tensors["obs_low"] = np.ascontiguousarray(obs_low, dtype=np.float32)
    tensors["obs_high"] = np.ascontiguousarray(obs_high, dtype=np.float32)
    return write_tensors(path, tensors, metadata)


def write_tensors(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict[str, Any]) -> Path:
    """Stamp ``metadata`` with fresh digests of ``tensors`` and of itself, then write both atomically.

    Any digests already in ``metadata`` (say, from a loaded checkpoint) are replaced.
    """
    from safetensors.numpy import save_file

    meta = {k: v for k, v in metadata.items() if k not in (TENSOR_DIGEST_KEY, METADATA_DIGEST_KEY)}
    meta[TENSOR_DIGEST_KEY] = _digest(tensors)
    # Digest what a reader will parse back (tuples become lists, and so on), not the Python objects.
    meta = json.loads(json.dumps(meta))
    meta[METADATA_DIGEST_KEY] = _metadata_digest(meta)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    return path


def build_metadata(
    *,
    model_config: dict[str, Any],
    observation_space: gym.Space,
    action_space: gym.Space,
    source_env_id: str | None,
    dream: dict[str, Any],
    dataset: dict[str, Any],
    fit: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": {"family": "ensemble", "config": model_config},
        "observation_space": space_to_json(observation_space),
        "action_space": space_to_json(action_space),
        "source_env_id": source_env_id,
        "dream": dream,
        "dataset": dataset,
        "fit": fit,
        "package_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's metadata from its header alone, checked (shape, types, agreement, digest):
    no tensor is read, no torch is imported."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: truncated or not a safetensors file ({exc})") from None
    return _check_header(path, header)


def _check_header(path: Path, header: dict[str, str]) -> dict[str, Any]:
    """The parsed metadata of a safetensors header, or a CheckpointError naming the file and the fault."""
    if METADATA_KEY not in header:
        raise CheckpointError(f"{path}: a safetensors file, but not a learned-envs checkpoint (no '{METADATA_KEY}' metadata)")
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupted metadata, not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupted metadata, a JSON {_json_type(meta)} where a JSON object belongs")
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a learned-envs checkpoint (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version}, but this learned-envs ({__version__}) reads version {FORMAT_VERSION}"
        )
    stored = meta.get(METADATA_DIGEST_KEY)
    edited = isinstance(stored, str) and stored != _metadata_digest(meta)  # None: saved before the digest existed
    try:
        _check_metadata(path, meta)
    except CheckpointError as exc:
        if edited:  # the malformed value most likely came from the edit; say both
            raise CheckpointError(f"{exc}; and the metadata does not match its {METADATA_DIGEST_KEY}: it was edited after saving") from None
        raise
    if edited:
        raise CheckpointError(f"{path}: metadata was edited after saving (it does not match its {METADATA_DIGEST_KEY})")
    return meta


def _json_type(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _described(value: Any) -> str:
    """``null``, or the value's JSON type and (the start of) the value, for error messages."""
    return "null" if value is None else f"{_json_type(value)} {value!r:.80}"


def _check_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Every key a reader relies on, of the right JSON type, and the spaces agreeing with the model."""
    for key, types, required in _SCHEMA:
        *parents, name = key.split(".")
        holder = meta
        for parent in parents:
            holder = holder[parent]  # a dict: checked earlier in _SCHEMA
        if name not in holder:
            if required:
                raise CheckpointError(f"{path}: metadata key '{key}' is missing")
            continue
        value = holder[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join(_JSON_NAMES[t] for t in types)
            raise CheckpointError(f"{path}: metadata key '{key}' should be a JSON {wanted}, not {_described(value)}")
    spaces = {}
    for key in ("observation_space", "action_space"):
        try:
            spaces[key] = space_from_json(meta[key])
        except _SPACE_ERRORS as exc:
            raise CheckpointError(f"{path}: metadata key '{key}' is not a valid space description ({exc})") from None
    _check_model(path, meta["model"])
    _check_spaces_match_config(path, meta["model"]["config"], spaces["observation_space"], spaces["action_space"])
    _check_dream_settings(path, meta["dream"])


def _check_model(path: Path, model_meta: dict[str, Any]) -> None:
    """The family is one this package builds, and every size in its config a positive whole number
    (which keys the config may hold is checked at load, where the model class is imported)."""
    if model_meta["family"] != "ensemble":
        raise CheckpointError(f"{path}: metadata key 'model.family' is {model_meta['family']!r}, an unknown model family")
    for key, value in model_meta["config"].items():  # discrete_actions is a bool, checked with the schema
        if key != "discrete_actions" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise CheckpointError(f"{path}: metadata key 'model.config.{key}' should be a positive whole number, not {_described(value)}")


def _check_spaces_match_config(path: Path, config: dict[str, Any], obs_space: gym.Space, act_space: gym.Space) -> None:
    """The network's input and output widths come from ``model.config``, the env's from the spaces."""
    discrete = isinstance(act_space, gym.spaces.Discrete)
    act_features = int(act_space.n) if discrete else flat_dim(act_space)  # one-hot width, or flat size
    agreements = (
        ("observation_space", f"{flat_dim(obs_space)} values per observation", "obs_dim", flat_dim(obs_space)),
        ("action_space", f"a {type(act_space).__name__} space", "discrete_actions", discrete),
        ("action_space", f"{act_features} action features", "action_dim", act_features),
    )
    for space_key, described, config_key, expected in agreements:
        if config[config_key] != expected:
            raise CheckpointError(
                f"{path}: metadata disagrees with itself: '{space_key}' ({described}) does not fit "
                f"'model.config.{config_key}' = {config[config_key]!r}"
            )


def _check_dream_settings(path: Path, dream: dict[str, Any]) -> None:
    """Each stored knob on its own, so the error names the one that is bad (at load, not at reset)."""
    steps = dream.get("max_episode_steps")
    if steps is not None and steps < 1:
        raise CheckpointError(f"{path}: metadata key 'dream.max_episode_steps' should be positive, not {steps}")
    for field in fields(DreamSettings):
        if dream.get(field.name) is None:
            continue  # absent or None: the knob's default
        try:
            DreamSettings.resolve({field.name: dream[field.name]}, {})  # one knob at a time: the error is about it
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: metadata key 'dream.{field.name}' is not a valid setting ({exc})") from None


def load_checkpoint(
    path: str | os.PathLike,
    device: str = "cpu",
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
) -> Checkpoint:
    """Load and verify a checkpoint; optionally check it is for the given spaces."""
    import torch
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: truncated or corrupted tensor data ({exc})") from None
    if _digest(tensors) != meta[TENSOR_DIGEST_KEY]:
        raise CheckpointError(f"{path}: tensor data does not match the checksum in its metadata (corrupted or edited)")
    for name, expected in (("observation space", observation_space), ("action space", action_space)):
        key = name.replace(" ", "_")
        if expected is not None and space_to_json(expected) != meta[key]:
            raise CheckpointError(f"{path}: checkpoint is for {name} {space_from_json(meta[key])}, not {expected}")
    _check_state_tensors(path, tensors, meta["model"]["config"]["obs_dim"])
    model = _build_model(path, meta["model"])
    state = {k[len("model.") :]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model config in its metadata ({exc})") from None
    model.eval().to(device)
    return Checkpoint(
        path=path,
        metadata=meta,
        model=model,
        start_states=torch.from_numpy(tensors["start_states"]).to(device),
        obs_low=torch.from_numpy(tensors["obs_low"]).to(device),
        obs_high=torch.from_numpy(tensors["obs_high"]).to(device),
    )


def _check_state_tensors(path: Path, tensors: dict[str, np.ndarray], obs_dim: int) -> None:
    """The start-state pool ``[S, D]`` (S >= 1) and the bounds ``[D]`` must fit ``model.config.obs_dim``."""
    wanted = {"start_states": f"[S >= 1, {obs_dim}]", "obs_low": f"[{obs_dim}]", "obs_high": f"[{obs_dim}]"}
    for name, want in wanted.items():
        if name not in tensors:
            raise CheckpointError(f"{path}: no '{name}' tensor")
        shape = tensors[name].shape
        fits = shape == (obs_dim,) if name != "start_states" else (len(shape) == 2 and shape[0] >= 1 and shape[1] == obs_dim)
        if not fits:
            raise CheckpointError(f"{path}: tensor '{name}' has shape {list(shape)}, but 'model.config.obs_dim' = {obs_dim} needs {want}")


def _build_model(path: Path, model_meta: dict[str, Any]):
    """The network described by the metadata's ``model`` object (family and sizes checked with the header)."""
    from learned_envs.models.ensemble import EnsembleConfig, EnsembleWorldModel

    config = model_meta["config"]
    known = {f.name for f in fields(EnsembleConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise CheckpointError(f"{path}: metadata key 'model.config' has unknown key(s) {unknown}; known: {sorted(known)}")
    return EnsembleWorldModel(EnsembleConfig(**config))
