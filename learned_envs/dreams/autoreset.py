"""The one piece of autoreset every batched face shares: restart finished rows in place."""

from __future__ import annotations

import numpy as np

from learned_envs.dreams.core import DreamCore


def restart_rows(core: DreamCore, observations: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Start new episodes in ``rows`` (``[N]`` bool) and write their first observations into
    ``observations`` (``[N, *obs_shape]``, changed in place and returned)."""
    observations[rows] = core.reset_rows(rows)
    return observations
