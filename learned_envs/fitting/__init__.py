"""Fitting world models to logged data, and writing them as dreams.

- :mod:`.config`: :class:`FitConfig`, every option and budget of a fit;
- :mod:`.split`: train/holdout splits by episode, data as device tensors;
- :mod:`.trainer`: one early-stopping loop for every stage of any :class:`~learned_envs.models.base.WorldModel`;
- :mod:`.dream`: :func:`fit`, data in, checked checkpoint out (start states, support, warm start).

The trainer reaches a model only through the WorldModel protocol, so a new family trains unchanged.
"""

from learned_envs.fitting.config import FitConfig, FitError, default_threads
from learned_envs.fitting.dream import fit, max_disagreement, observed_bounds, start_states
from learned_envs.fitting.split import split_by_episode, to_batch
from learned_envs.fitting.trainer import FitResult, fit_world_model

__all__ = [
    "FitConfig", "FitError", "FitResult", "default_threads", "fit", "fit_world_model", "max_disagreement",
    "observed_bounds", "split_by_episode", "start_states", "to_batch",
]
