"""The single-file dream artifact: one ``.safetensors`` file, never a pickle.

Tensors:
    ``model.*``        world-model weights and normaliser statistics
    ``start_states``   ``[S, D]`` logged episode starts (the dream's reset distribution)
    ``reset_states``   optional, ``[M, D]`` a sample of every logged state, for ``reset_from="logged"``
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
import math
import os
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from learned_envs.atomic import atomic_path
from learned_envs.data.spaces import flat_dim, space_from_json, space_to_json
from learned_envs.dream_settings import DreamSettings, check_max_episode_steps
from learned_envs.version import __version__

FORMAT_NAME = "learned-envs-checkpoint"
# 2: the ensemble's termination head carries its data support (support_low/support_high).
FORMAT_VERSION = 2
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
    reset_states: Any = None  # torch.Tensor [M, D] or None: logged states for reset_from="logged"

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
    reset_states: np.ndarray | None = None,
) -> Path:
    """Write the artifact atomically. ``metadata`` is the dict of :func:`build_metadata`;
    ``reset_states`` ``[M, D]`` (optional) the logged states ``reset_from="logged"`` draws from.

    The stored family is ``model.family``: a file whose family names another class than the one
    that made its weights could never be loaded back.
    """
    family = getattr(model, "family", None)
    if family is not None:
        stored = metadata.get("model", {}).get("family")
        if stored not in (None, family):
            raise ValueError(f"metadata says model family {stored!r}, but the model is a {family!r}")
        metadata = {**metadata, "model": {**metadata.get("model", {}), "family": family}}
    tensors = {f"model.{k}": v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}
    tensors["start_states"] = np.ascontiguousarray(start_states, dtype=np.float32)
    tensors["obs_low"] = np.ascontiguousarray(obs_low, dtype=np.float32)
    tensors["obs_high"] = np.ascontiguousarray(obs_high, dtype=np.float32)
    if reset_states is not None:
        tensors["reset_states"] = np.ascontiguousarray(reset_states, dtype=np.float32)
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
    model_family: str = "ensemble",
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint's metadata; ``model_family`` is the registered name the loader rebuilds the model by;
    ``training`` (optional) the preset recipe ``train`` uses (:func:`learned_envs.presets.stored_training`)."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": {"family": model_family, "config": model_config},
        "observation_space": space_to_json(observation_space),
        "action_space": space_to_json(action_space),
        "source_env_id": source_env_id,
        "dream": dream,
        "dataset": dataset,
        "fit": fit,
        "package_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **({"training": training} if training is not None else {}),
    }


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's metadata from its header alone, checked (shape, types, agreement, digest):
    no tensor is read, no torch is imported."""
    from safetensors import SafetensorError, safe_open

    path = _readable(Path(path))
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: truncated or not a safetensors file ({exc})") from None
    return _check_header(path, header)


def _readable(path: Path) -> Path:
    """``path`` if it is a file this process may read; else a CheckpointError saying which it is not."""
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file")
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied (the file exists, but this user may not read it)") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return path


def _check_header(path: Path, header: dict[str, str]) -> dict[str, Any]:
    """The parsed metadata of a safetensors header, or a CheckpointError naming the file and the fault."""
    if METADATA_KEY not in header:
        raise CheckpointError(f"{path}: a safetensors file, but not a learned-envs checkpoint (no '{METADATA_KEY}' metadata)")
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupted metadata, not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: corrupted metadata, JSON nested too deeply to read") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupted metadata, a JSON {_json_type(meta)} where a JSON object belongs")
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a learned-envs checkpoint (format {meta.get('format')!r:.80})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r:.80}, but this learned-envs ({__version__}) reads version {FORMAT_VERSION}"
            + (" (an older file: refit it from its data with `learned-envs fit`, or its recipe)"
               if isinstance(version, int) and version < FORMAT_VERSION else "")
        )
    stored = meta.get(METADATA_DIGEST_KEY)
    try:
        edited = isinstance(stored, str) and stored != _metadata_digest(meta)  # None: saved before the digest existed
    except (RecursionError, ValueError):  # nested too deeply to re-serialise, or a NaN the canonical form refuses
        raise CheckpointError(f"{path}: corrupted metadata, it cannot be digested again (nested too deeply)") from None
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
    _check_fit_metrics(path, meta["fit"].get("metrics") or {})


def _check_fit_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Fit metrics the dream acts on: ``max_train_disagreement`` and ``train_disagreement_quantiles``
    set ``halt_threshold="auto"``, ``support_distance_quantiles`` ``support_halt="auto"``, and a
    NaN there would switch a halt off without a word."""
    value = metrics.get("max_train_disagreement")
    if value is not None and not _finite_non_negative(value):
        raise CheckpointError(
            f"{path}: metadata key 'fit.metrics.max_train_disagreement' should be a finite number >= 0, not {_described(value)}"
        )
    for record in ("train_disagreement_quantiles", "support_distance_quantiles"):
        if metrics.get(record) is not None:
            _check_recorded_quantiles(path, f"fit.metrics.{record}", metrics[record])


def _check_recorded_quantiles(path: Path, key: str, quantiles: Any) -> None:
    """``quantiles`` a ``{"q": value}`` object: levels in [0, 1], finite values >= 0, rising with the level."""
    if not isinstance(quantiles, dict) or not 1 <= len(quantiles) <= MAX_RECORDED_QUANTILES:
        raise CheckpointError(f"{path}: metadata key '{key}' should be a JSON object of 1 to {MAX_RECORDED_QUANTILES} "
                              f"quantiles, not {_described(quantiles)}")
    levels = []
    for q, v in quantiles.items():
        try:
            level = float(q)
        except ValueError:
            level = math.nan
        if not 0 <= level <= 1:
            raise CheckpointError(f"{path}: metadata key '{key}' has key {q!r:.40}, which is not a quantile between 0 and 1")
        if not _finite_non_negative(v):
            raise CheckpointError(f"{path}: metadata key '{key}.{q}' should be a finite number >= 0, not {_described(v)}")
        levels.append((level, v))
    levels.sort()
    for (q0, v0), (q1, v1) in zip(levels, levels[1:]):
        if v1 < v0:
            raise CheckpointError(f"{path}: metadata key '{key}': the {q1} quantile ({v1}) is below the {q0} quantile ({v0})")


def _finite_non_negative(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def _check_model(path: Path, model_meta: dict[str, Any]) -> None:
    """Every size in the config a positive whole number, every flag a bool. The family name is only looked up, in
    :func:`~learned_envs.models.base.model_family`, at load: the families are torch modules, and
    reading a header must not import torch (``import learned_envs`` reads every header)."""
    # Flags (discrete_actions, checked with the schema; terminal_bonus) are bools: which keys may be
    # flags is the family's to say, at load (config_from_json).
    for key, value in model_meta["config"].items():
        if not isinstance(value, bool) and (not isinstance(value, int) or value < 1):
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
    try:
        check_max_episode_steps(dream.get("max_episode_steps"))
    except ValueError as exc:
        raise CheckpointError(f"{path}: metadata key 'dream.max_episode_steps': {exc}") from None
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
    """Load and verify a checkpoint; optionally check it is for the given spaces.

    The file is untrusted input. In order: the header (metadata types, digest); the model family,
    looked up by name among the registered ones (never imported); every tensor's name, dtype and
    shape against what the config implies, read from the header before any tensor is; the
    tensors; their digest; every value (finite, std > 0, start states inside the observation
    space, bounds ordered). Only then is the model built.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    meta = read_metadata(path)
    for name, expected in (("observation space", observation_space), ("action space", action_space)):
        key = name.replace(" ", "_")
        if expected is not None and space_to_json(expected) != meta[key]:
            raise CheckpointError(f"{path}: checkpoint is for {name} {space_from_json(meta[key])}, not {expected}")
    cls, config = _model_config(path, meta["model"])
    _check_tensor_layout(path, _header_tensors(path), cls, config)
    try:
        tensors = load_file(str(path))
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: truncated or corrupted tensor data ({exc})") from None
    if _digest(tensors) != meta[TENSOR_DIGEST_KEY]:
        raise CheckpointError(f"{path}: tensor data does not match the checksum in its metadata (corrupted or edited)")
    _check_tensor_values(path, tensors, space_from_json(meta["observation_space"]))
    # The constructor's initial weights are overwritten below; drawn from the global generator,
    # they would still move its state, so loading a dream mid-run (an evaluation env built
    # during training) would change the caller's later draws. Drawn in a fork, they leave it as it was.
    with torch.random.fork_rng(devices=[]):
        model = cls(config)
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
        reset_states=torch.from_numpy(tensors["reset_states"]).to(device) if "reset_states" in tensors else None,
    )


# Most values a checkpoint may make this process hold, per group of tensors: far above any dream
# this package fits (a shipped one holds ~0.6M weights), far below what would exhaust a machine.
MAX_MODEL_VALUES = 50_000_000
MAX_RECORDED_QUANTILES = 64
MAX_START_STATE_VALUES = 50_000_000  # start_states and reset_states together
# State tables: start_states is required, reset_states optional; each [rows >= 1, obs_dim].
_STATE_TABLES = ("start_states", "reset_states")
_FLOAT_DTYPES = ("F16", "F32", "F64")  # what numpy reads and load_state_dict casts; no integer "weights"


def _model_config(path: Path, model_meta: dict[str, Any]):
    """The registered family class named by the metadata and its config, both refused with a
    CheckpointError when unknown, malformed or too large to hold."""
    from learned_envs.models.base import model_family

    try:
        cls = model_family(model_meta["family"])
    except KeyError as exc:
        raise CheckpointError(f"{path}: metadata key 'model.family': {exc.args[0]}") from None
    try:
        config = cls.config_from_json(model_meta["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: metadata key 'model.config': {exc}") from None
    count = cls.parameter_count(config)
    if count > MAX_MODEL_VALUES:
        raise CheckpointError(
            f"{path}: metadata key 'model.config' describes a model of {count:,} values, above the {MAX_MODEL_VALUES:,} "
            "this package loads (a crafted or corrupted file)"
        )
    return cls, config


def _header_tensors(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``name -> (dtype, shape)`` of every tensor, read from the safetensors header without loading any."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {name: (f.get_slice(name).get_dtype(), tuple(f.get_slice(name).get_shape())) for name in f.keys()}
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: truncated or not a safetensors file ({exc})") from None


def _check_tensor_layout(path: Path, found: dict[str, tuple[str, tuple[int, ...]]], cls, config) -> None:
    """Every tensor the config implies, of that shape, and no other: checked on the header, so a
    file whose sizes disagree with its config is refused before anything is allocated."""
    obs_dim = config.obs_dim
    expected = {f"model.{name}": tuple(shape) for name, shape in cls.tensor_shapes(config).items()}
    expected.update(obs_low=(obs_dim,), obs_high=(obs_dim,))
    for name in sorted(set(expected) | {"start_states"}):
        if name not in found:
            raise CheckpointError(f"{path}: no '{name}' tensor (the config in its metadata needs one)")
    extra = sorted(set(found) - set(expected) - set(_STATE_TABLES))
    if extra:
        raise CheckpointError(f"{path}: tensor(s) {extra[:5]} that the model config in its metadata has no place for")
    for name, (dtype, shape) in sorted(found.items()):
        if dtype not in _FLOAT_DTYPES:
            raise CheckpointError(f"{path}: tensor '{name}' has dtype {dtype}, expected floating point ({', '.join(_FLOAT_DTYPES)})")
        if name in _STATE_TABLES:
            if not (len(shape) == 2 and shape[0] >= 1 and shape[1] == obs_dim):
                raise CheckpointError(f"{path}: tensor '{name}' has shape {list(shape)}, but 'model.config.obs_dim' = "
                                      f"{obs_dim} needs [S >= 1, {obs_dim}]")
        elif shape != expected[name]:
            source = f"'model.config.obs_dim' = {obs_dim}" if not name.startswith("model.") else "the model config in its metadata"
            raise CheckpointError(f"{path}: tensor '{name}' has shape {list(shape)}, but {source} needs {list(expected[name])}")
    states = sum(math.prod(found[name][1]) for name in _STATE_TABLES if name in found)
    if states > MAX_START_STATE_VALUES:
        raise CheckpointError(f"{path}: tensors {[n for n in _STATE_TABLES if n in found]} hold {states:,} values, above the "
                              f"{MAX_START_STATE_VALUES:,} this package loads")


def _check_tensor_values(path: Path, tensors: dict[str, np.ndarray], observation_space: gym.Space) -> None:
    """Values a dream would serve or divide by: finite everywhere, every normaliser std > 0, the
    observed bounds ordered, every start state inside the observation space."""
    for name, value in sorted(tensors.items()):
        bad = ~np.isfinite(value)
        if bad.any():
            raise CheckpointError(f"{path}: tensor '{name}' holds NaN or infinite values (first at index "
                                  f"{list(np.unravel_index(int(np.flatnonzero(bad)[0]), value.shape))})")
        if name.endswith("norm.std") and not (value > 0).all():
            raise CheckpointError(f"{path}: tensor '{name}' (a normaliser's std) holds {float(value[value <= 0].flat[0])}; "
                                  "every entry must be > 0")
    low, high = tensors["obs_low"], tensors["obs_high"]
    if (low > high).any():
        i = int(np.flatnonzero(low > high)[0])
        raise CheckpointError(f"{path}: tensors 'obs_low'/'obs_high' disagree: at feature {i}, low {low[i]} > high {high[i]}")
    for name in (n for n in _STATE_TABLES if n in tensors):
        outside = _outside_space(tensors[name], observation_space)
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            raise CheckpointError(f"{path}: tensor '{name}', row {row}: {tensors[name][row].tolist()} is outside "
                                  f"the observation space {observation_space}")


def _outside_space(states: np.ndarray, space: gym.Space) -> np.ndarray:
    """``[S] bool``: rows of the flat states ``[S, D]`` that ``space`` does not contain (as its dtype holds them)."""
    if isinstance(space, gym.spaces.Discrete):
        values = states[:, 0]
        return (values != np.round(values)) | (values < space.start) | (values >= space.start + space.n)
    if isinstance(space, gym.spaces.Box):
        cast = states.astype(space.dtype)  # what the dream serves: float32 rounding counts as the space's
        low, high = space.low.reshape(-1), space.high.reshape(-1)
        return ((cast < low) | (cast > high)).any(axis=1)
    return np.zeros(len(states), bool)
