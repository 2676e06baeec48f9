"""The single-file dream artifact: one ``.safetensors`` file, never a pickle.

Tensors:
    ``model.*``        world-model weights and normaliser statistics
    ``start_states``   ``[S, D]`` logged episode starts (the dream's reset distribution)
    ``obs_low``, ``obs_high``  ``[D]`` the bounds of every logged observation (the dream's support,
                       widened by its ``bounds_margin`` knob)
Metadata: JSON under the single key ``"learned_envs"`` (see :func:`build_metadata`), including
``tensor_sha256``, a digest of every tensor's bytes that catches edited or corrupted files.
Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from learned_envs.atomic import atomic_path
from learned_envs.data.spaces import space_from_json, space_to_json
from learned_envs.version import __version__

FORMAT_NAME = "learned-envs-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "learned_envs"


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


def save_checkpoint(
    path: str | os.PathLike,
    model,
    start_states: np.ndarray,
    obs_low: np.ndarray,
    obs_high: np.ndarray,
    metadata: dict[str, Any],
) -> Path:
    """Write the artifact atomically. ``metadata`` is the dict of :func:`build_metadata`."""
    from safetensors.numpy import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}
    tensors["start_states"] = np.ascontiguousarray(start_states, dtype=np.float32)
    tensors["obs_low"] = np.ascontiguousarray(obs_low, dtype=np.float32)
    tensors["obs_high"] = np.ascontiguousarray(obs_high, dtype=np.float32)
    meta = dict(metadata, tensor_sha256=_digest(tensors))
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
    """The checkpoint's metadata from its header alone: no tensor is read, no torch is imported."""
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
    if METADATA_KEY not in header:
        raise CheckpointError(f"{path}: a safetensors file, but not a learned-envs checkpoint (no '{METADATA_KEY}' metadata)")
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupted metadata, not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a learned-envs checkpoint (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version}, but this learned-envs ({__version__}) reads version {FORMAT_VERSION}"
        )
    return meta


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

    from learned_envs.models.ensemble import EnsembleConfig, EnsembleWorldModel

    path = Path(path)
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: truncated or corrupted tensor data ({exc})") from None
    if _digest(tensors) != meta.get("tensor_sha256"):
        raise CheckpointError(f"{path}: tensor data does not match the checksum in its metadata (corrupted or edited)")
    for name, expected in (("observation space", observation_space), ("action space", action_space)):
        key = name.replace(" ", "_")
        if expected is not None and space_to_json(expected) != meta[key]:
            raise CheckpointError(f"{path}: checkpoint is for {name} {space_from_json(meta[key])}, not {expected}")
    family = meta["model"]["family"]
    if family != "ensemble":
        raise CheckpointError(f"{path}: unknown model family {family!r}")
    model = EnsembleWorldModel(EnsembleConfig(**meta["model"]["config"]))
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
