"""World models. :class:`EnsembleWorldModel` is the probabilistic MLP ensemble for state observations."""

from learned_envs.models.ensemble import EnsembleConfig, EnsembleLinear, EnsembleWorldModel
from learned_envs.models.normalizer import Normalizer

__all__ = ["EnsembleConfig", "EnsembleLinear", "EnsembleWorldModel", "Normalizer"]
