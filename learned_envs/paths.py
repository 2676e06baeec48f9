"""Where things live on disk: the user's dream folder and the shipped checkpoints."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def user_dream_dir() -> Path:
    """``$LEARNED_ENVS_HOME`` (default ``~/.learned_envs``)/``dreams``: checkpoints registered at import."""
    home = os.environ.get("LEARNED_ENVS_HOME") or os.path.join(os.path.expanduser("~"), ".learned_envs")
    return Path(home) / "dreams"


def shipped_checkpoint_dir() -> Path:
    """The installed copy of the top-level ``checkpoints/`` folder (or that folder itself when
    the package runs from a source checkout, where the install-time mapping does not exist)."""
    try:
        return Path(str(resources.files("learned_envs.checkpoints")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "checkpoints"
