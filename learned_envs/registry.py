"""Dream ids -> checkpoint files, registered with Gymnasium without loading any weights.

Three sources, in order: the shipped dreams (``learned_envs/checkpoints``), the user's dream
folder (``$LEARNED_ENVS_HOME/dreams``, where ``learned-envs fit --id`` puts checkpoints), and
explicit :func:`register_dream` calls. A later source may override a *dream* id from an earlier
one; an id that Gymnasium already has for a real environment (``CartPole-v1``) is never taken
over silently, or ``gym.make`` of the real env would quietly run a dream.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym

from learned_envs.checkpoint import CheckpointError, read_metadata
from learned_envs.dream_settings import check_max_episode_steps
from learned_envs.paths import shipped_checkpoint_dir, user_dream_dir

ENTRY_POINT = "learned_envs.dreams.env:DreamEnv"
VECTOR_ENTRY_POINT = "learned_envs.dreams.vector:DreamVectorEnv"

# id -> {"checkpoint", "origin", "metadata"} for every dream this package registered.
_DREAMS: dict[str, dict[str, Any]] = {}

# Gymnasium's ``Name-vN`` without a namespace: dream ids become file names (no '/'), and a ':'
# would make ``gym.make`` import the module named before it.
DREAM_ID = re.compile(r"^[A-Za-z0-9_.\-]+-v\d+$")


def validate_dream_id(dream_id: Any) -> None:
    """A ``ValueError`` unless ``dream_id`` looks like ``Name-v0`` (letters, digits, ``_.-``, then ``-v<N>``)."""
    if not isinstance(dream_id, str) or not DREAM_ID.match(dream_id):
        raise ValueError(f"dream id {dream_id!r:.80} must look like 'Name-v0' (letters, digits, '_', '.', '-', then -v<N>)")


def register_dream(
    env_id: str,
    checkpoint: str | os.PathLike,
    *,
    max_episode_steps: int | None = None,
    origin: str = "register_dream",
    force: bool = False,
    **defaults: Any,
) -> None:
    """Register ``checkpoint`` under ``env_id`` for ``gym.make`` and ``gym.make_vec``.

    ``defaults`` become the env's keyword arguments (``temperature``, ``device``, ...), which
    ``gym.make(env_id, **kwargs)`` can still override. Only the file's header is read.
    Re-registering a dream id points it at the new file, quietly. An id already registered for
    anything that is not a dream raises ``ValueError`` unless ``force=True``.
    """
    if ":" in env_id:
        raise ValueError(f"cannot register a dream as {env_id!r}: gym.make would import the module named before the ':'")
    path = Path(checkpoint).resolve()
    existing = gym.registry.get(env_id)
    if existing is not None and existing.entry_point != ENTRY_POINT and not force:
        raise ValueError(
            f"cannot register dream {path} as {env_id!r}: that id is already the environment "
            f"{existing.entry_point}, and a dream under it would replace it for every gym.make({env_id!r}). "
            "Pick another id (dreams are usually 'Dream-<Name>-v0'), or pass force=True to replace it on purpose."
        )
    meta = read_metadata(path)
    if max_episode_steps is None:
        max_episode_steps = meta["dream"].get("max_episode_steps")
    max_episode_steps = check_max_episode_steps(max_episode_steps)
    if existing is not None:
        del gym.registry[env_id]  # gym.register would warn about overriding; this replacement is wanted
    gym.register(
        id=env_id,
        entry_point=ENTRY_POINT,
        vector_entry_point=VECTOR_ENTRY_POINT,
        max_episode_steps=max_episode_steps,
        kwargs={"checkpoint": str(path), **defaults},
    )
    _DREAMS[env_id] = {"checkpoint": str(path), "origin": origin, "metadata": meta}


def _register_folder(folder: Path, origin: str) -> None:
    """Register every checkpoint in ``folder``; a file that cannot be registered is warned about and skipped."""
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.safetensors")):
        try:
            meta = read_metadata(path)
            dream_id = meta["dream"].get("id") or path.stem
            try:
                validate_dream_id(dream_id)
            except ValueError as exc:  # an id from a file, so the file is what is wrong
                raise CheckpointError(f"{path}: metadata key 'dream.id': {exc}") from None
            register_dream(dream_id, path, origin=origin)
        except Exception as exc:  # noqa: BLE001
            # Deliberately broad: this runs inside `import learned_envs`, so anything a bad file
            # raises would break the import, every gym.make and every CLI command, not just the
            # dream in that file. The known cases (CheckpointError, a real env's id) land here too.
            reason = str(exc).removeprefix(f"{path}: ")  # a CheckpointError already starts with the path
            if not isinstance(exc, ValueError):  # an unforeseen failure: its type is part of the story
                reason = f"{type(exc).__name__}: {reason}"
            warnings.warn(f"learned_envs: skipping dream {path}: {reason}", stacklevel=3)


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


def source_env_of(env_id: str) -> str | None:
    """The real env a registered dream was fitted on; None when ``env_id`` is not a dream.

    A dream whose checkpoint names no source env raises a ``ValueError``: there is nothing real to
    score it against."""
    entry = _DREAMS.get(env_id)
    if entry is None:
        return None
    source = entry["metadata"].get("source_env_id")
    if not source:
        raise ValueError(f"{env_id} was fitted without --source-env; name the real env id instead")
    return source
