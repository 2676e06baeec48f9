"""The one piece of autoreset every batched face shares: restart finished rows in place."""

from __future__ import annotations

import numpy as np
import torch

from learned_envs.dreams.core import DreamCore


def restart_rows(core: DreamCore, observations: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Start new episodes in ``rows`` (``[N]`` bool) and write their first observations into
    ``observations`` (``[N, *obs_shape]``, changed in place and returned)."""
    mask = torch.as_tensor(rows, device=core.device)
    core.reset_rows(mask)
    observations[rows] = core.observations(mask)
    return observations
