"""learned-envs: world models fitted on logged data, served as registered Gymnasium envs ("dreams").

``import learned_envs`` registers every shipped dream and every checkpoint in the user's dream
folder (reading file headers only), so ``gym.make("Dream-CartPole-v0")`` works;
``gym.make("learned_envs:Dream-CartPole-v0")`` works without the import.
"""

from learned_envs.registry import register_all, register_dream, registered_dreams
from learned_envs.version import __version__

__all__ = ["__version__", "register_dream", "registered_dreams", "fit", "collect", "load_data"]


def fit(*args, **kwargs):
    """Fit a dream to logged data and write its checkpoint. See :func:`learned_envs.fitting.fit`."""
    from learned_envs.fitting import fit as _fit

    return _fit(*args, **kwargs)


def collect(*args, **kwargs):
    """Log transitions from a Gymnasium env. See :func:`learned_envs.data.collecting.collect`."""
    from learned_envs.data.collecting import collect as _collect

    return _collect(*args, **kwargs)


def load_data(*args, **kwargs):
    """Read logged transitions. See :func:`learned_envs.data.load`."""
    from learned_envs.data import load

    return load(*args, **kwargs)


register_all()
