"""benchmarks/dream_values.py: each agent's discounted return in the dream it would train in, and how its episodes end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import SAC

from learned_envs.data import save
from learned_envs.data.collecting import collect
from learned_envs.fitting import FitConfig, fit
from tests.helpers import TINY_FIT, load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def values():
    return load_benchmark("dream_values")


@pytest.fixture(scope="module")
def dream_and_agent(tmp_path_factory):
    """A tiny offline-medium dream of random Pendulum-v1 rows (two members, so they disagree; its halt stored) and an
    untrained SAC's zip."""
    folder = tmp_path_factory.mktemp("values")
    path = save(collect("Pendulum-v1", 400, seed=3, progress=False), folder / "pendulum.npz")
    dream = fit(path, folder / "dream.safetensors", source_env="Pendulum-v1", config=FitConfig(**{**TINY_FIT, "num_elites": 2}),
                preset="offline-medium", reset_states=300, progress=False)
    agent = folder / "agent.zip"
    SAC("MlpPolicy", gym.make("Pendulum-v1"), seed=0).save(agent)
    return dream, agent


def test_cli_values_each_agent_and_says_how_its_episodes_end(dream_and_agent, tmp_path):
    dream, agent = dream_and_agent
    out = tmp_path / "values.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dream_values.py"), str(dream), "--agents",
                           f"a={agent}", f"b={agent}", "--rollouts", "8", "--horizon", "6", "--gamma", "0.5", "1",
                           "--dream-kwarg", "halt_threshold=none", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    a, b = result["rows"]["a"], result["rows"]["b"]
    assert a == b, "the same policy from the same resets and draws is valued alike"
    # Pendulum never ends by itself and the halt is off: every episode runs to the time limit.
    assert a["share_timed_out"] == 1.0 and a["share_halted"] == a["share_fell"] == 0.0 and a["length"] == 6
    assert a["discounted"]["1.0"] == pytest.approx(a["return"]) and a["return"] < 0  # Pendulum pays costs
    assert abs(a["discounted"]["0.5"]) < abs(a["return"])
    assert result["dream_kwargs"] == {"halt_threshold": None} and "a=" in result["command"]


def test_a_halt_at_zero_disagreement_ends_every_episode_at_its_first_step(values, dream_and_agent):
    dream, agent = dream_and_agent
    values.register_dream(values.DREAM_ID, dream)
    policy = SAC.load(agent, device="cpu")
    halted = values.first_episodes(policy, 5, 4, seed=0, halt_threshold=0.0)
    assert halted["halted"].all() and not halted["fell"].any() and (halted["lengths"] == 1).all()
    assert (halted["rewards"][:, 1:] == 0).all() and (halted["rewards"][:, 0] != 0).all()
    # The stored halt (the fit's 99th percentile of disagreement) ends fewer of them than a halt at zero.
    stored = values.first_episodes(policy, 5, 4, seed=0)
    assert stored["lengths"].mean() > 1
    summary = values.summarise(stored, [0.9])
    expected = (stored["rewards"] * 0.9 ** np.arange(4)).sum(1).mean()
    assert summary["discounted"]["0.9"] == pytest.approx(expected)
    assert summary["share_halted"] + summary["share_fell"] + summary["share_timed_out"] == pytest.approx(1.0)
