"""Dream ids -> checkpoint files, registered with Gymnasium without loading any weights.

Three sources, in order: the shipped dreams (``learned_envs/checkpoints``), the user's dream
folder (``$LEARNED_ENVS_HOME/dreams``, where ``learned-envs fit --id`` puts checkpoints), and
explicit :func:`register_dream` calls. A later source may override an id from an earlier one.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym

from learned_envs.checkpoint import CheckpointError, read_metadata
from learned_envs.paths import shipped_checkpoint_dir, user_dream_dir

ENTRY_POINT = "learned_envs.dreams.env:DreamEnv"
VECTOR_ENTRY_POINT = "learned_envs.dreams.vector:DreamVectorEnv"

# id -> {"checkpoint", "origin", "metadata"} for every dream this package registered.
_DREAMS: dict[str, dict[str, Any]] = {}


def register_dream(
    env_id: str,
    checkpoint: str | os.PathLike,
    *,
    max_episode_steps: int | None = None,
    origin: str = "register_dream",
    **defaults: Any,
) -> None:
    """Register ``checkpoint`` under ``env_id`` for ``gym.make`` and ``gym.make_vec``.

    ``defaults`` become the env's keyword arguments (``temperature``, ``device``, ...), which
    ``gym.make(env_id, **kwargs)`` can still override. Only the file's header is read.
    """
    path = Path(checkpoint).resolve()
    meta = read_metadata(path)
    if max_episode_steps is None:
        max_episode_steps = meta.get("dream", {}).get("max_episode_steps")
    if env_id in gym.registry:
        del gym.registry[env_id]  # re-registering an id points it at the new file, quietly
    gym.register(
        id=env_id,
        entry_point=ENTRY_POINT,
        vector_entry_point=VECTOR_ENTRY_POINT,
        max_episode_steps=max_episode_steps,
        kwargs={"checkpoint": str(path), **defaults},
    )
    _DREAMS[env_id] = {"checkpoint": str(path), "origin": origin, "metadata": meta}


def _register_folder(folder: Path, origin: str) -> None:
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.safetensors")):
        try:
            meta = read_metadata(path)
            register_dream(meta.get("dream", {}).get("id") or path.stem, path, origin=origin)
        except (CheckpointError, gym.error.Error, ValueError) as exc:
            warnings.warn(f"learned_envs: skipping dream {path}: {exc}", stacklevel=3)


def register_all() -> None:
    """Register the shipped dreams, then the user's folder. Called by ``import learned_envs``."""
    _register_folder(shipped_checkpoint_dir(), "shipped")
    _register_folder(user_dream_dir(), "user")


def registered_dreams() -> list[dict[str, Any]]:
    """One row per registered dream: id, origin, checkpoint, source env, data size and fit metrics."""
    rows = []
    for env_id, entry in sorted(_DREAMS.items()):
        meta = entry["metadata"]
        dataset, metrics = meta.get("dataset", {}), meta.get("fit", {}).get("metrics", {})
        rows.append(
            {
                "id": env_id,
                "origin": entry["origin"],
                "checkpoint": entry["checkpoint"],
                "source_env_id": meta.get("source_env_id"),
                "transitions": dataset.get("transitions"),
                "episodes": dataset.get("episodes"),
                "behaviour_policy": dataset.get("behaviour_policy"),
                "holdout_mse": metrics.get("holdout_mse"),
                "termination_recall": metrics.get("termination_holdout_recall"),
            }
        )
    return rows
