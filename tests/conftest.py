"""Shared fixtures: data the tests make themselves, and a small dream fitted on it in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from learned_envs.models import EnsembleConfig

torch.set_num_threads(1)
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

# A fit small enough for CI (seconds), big enough to be a real ensemble with elites.
SMALL_FIT = dict(model=EnsembleConfig(hidden_size=64, num_layers=2, ensemble_size=3), num_elites=2, max_updates=400,
                 min_updates=150, eval_every=25, patience=100, termination_max_updates=400)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Never touch the real user dream folder."""
    monkeypatch.setenv("LEARNED_ENVS_HOME", str(tmp_path_factory.getbasetemp() / "learned_envs_home"))


@pytest.fixture(scope="session")
def cartpole_npz(tmp_path_factory) -> Path:
    """800 random-policy CartPole-v1 transitions collected by the package's own ``collect``."""
    from learned_envs.data.collecting import collect

    path = tmp_path_factory.mktemp("data") / "cartpole.npz"
    collect("CartPole-v1", 800, out=path, seed=0, progress=False)
    return path


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory, cartpole_npz) -> Path:
    """A small CartPole dream checkpoint fitted on :func:`cartpole_npz`."""
    from learned_envs.fitting import FitConfig, fit

    path = tmp_path_factory.mktemp("ckpt") / "small.safetensors"
    fit(cartpole_npz, path, seed=0, config=FitConfig(**SMALL_FIT), progress=False)
    return path


@pytest.fixture(scope="session")
def small_dream_id(small_checkpoint) -> str:
    """``small_checkpoint`` registered as ``Test-SmallCartPole-v0``."""
    import learned_envs

    learned_envs.register_dream("Test-SmallCartPole-v0", small_checkpoint)
    return "Test-SmallCartPole-v0"
