"""World models behind one protocol (:mod:`learned_envs.models.base`).

Importing this package registers the shipped families: ``"ensemble"``
(:class:`EnsembleWorldModel`, the probabilistic MLP ensemble for state observations).
"""

from learned_envs.models.base import Batch, ModelConfig, Prediction, WorldModel, model_families, model_family, register_family
from learned_envs.models.ensemble import EnsembleConfig, EnsembleLinear, EnsembleWorldModel
from learned_envs.models.normalizer import Normalizer

__all__ = [
    "Batch", "ModelConfig", "Prediction", "WorldModel", "model_families", "model_family", "register_family",
    "EnsembleConfig", "EnsembleLinear", "EnsembleWorldModel", "Normalizer",
]
