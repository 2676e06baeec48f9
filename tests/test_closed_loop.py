"""benchmarks/closed_loop.py: an agent in its dream and in the real env from the same start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from learned_envs.dreams.core import DreamCore
from tests.helpers import PNG_SIGNATURE, load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def closed_loop():
    return load_benchmark("closed_loop")


@pytest.fixture(scope="module")
def agent_zip(tmp_path_factory) -> Path:
    """An untrained SB3 PPO for CartPole: any policy will do, the paths are what is compared."""
    from stable_baselines3 import PPO

    path = tmp_path_factory.mktemp("agent") / "ppo.zip"
    PPO("MlpPolicy", gym.make("CartPole-v1"), seed=0, device="cpu").save(path)
    return path


class PushOrBalance:
    """A stand-in agent for a batch of CartPole dreams: the first always pushes left (the pole soon
    falls), the others push towards the pole's lean (it stays up far longer)."""

    def predict(self, obs, deterministic=True):
        action = (obs[:, 2] + obs[:, 3] > 0).astype(np.int64)
        action[0] = 0
        return action, None


def test_closed_loop_stops_each_dream_at_its_own_end(closed_loop, small_checkpoint):
    core = DreamCore(str(small_checkpoint), num_envs=3, temperature=0.0, **closed_loop.UNGUARDED)
    first = np.array([0.0, 0.0, 0.05, 0.0])
    paths, ends = closed_loop.dream_closed_loop(core, PushOrBalance(), first, horizon=200)
    assert paths.shape == (3, 201, 4)
    np.testing.assert_allclose(paths[:, 0], np.repeat(first[None], 3, 0), atol=1e-6)
    assert 0 < ends[0] < ends[1], "pushing one way drops the pole sooner than balancing"
    for path, end in zip(paths, ends):
        assert np.isfinite(path[: end + 1]).all() and np.isnan(path[end + 1:]).all()


def test_cli_compares_real_and_dream_paths(closed_loop, small_checkpoint, agent_zip, tmp_path):
    out = tmp_path / "loop.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "closed_loop.py"), str(small_checkpoint),
                           "--agents", f"ppo={agent_zip}", "--samples", "3", "--seed", "5", "--episodes", "2", "--dims", "0", "2",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    summary = result["agents"]["ppo"]
    assert result["env_id"] == "CartPole-v1" and result["seeds"] == [5, 6]
    # Each real episode is the agent's own, from its reset seed.
    agent = closed_loop.load_sb3_agent(str(agent_zip))
    for row, seed in zip(summary["per_episode"], [5, 6]):
        real, actions, total = closed_loop.real_episode(agent, "CartPole-v1", seed)
        assert row["seed"] == seed and row["real_steps"] == len(actions) and row["real_return"] == pytest.approx(total)
        assert len(row["dream_sample_steps"]) == 3
        assert all(1 <= steps <= summary["horizon"] for steps in [row["dream_mean_steps"], *row["dream_sample_steps"]])
    assert summary["real_steps"] == pytest.approx(np.mean([r["real_steps"] for r in summary["per_episode"]]))
    probe = DreamCore(str(small_checkpoint), halt_threshold="auto", halt_quantile=0.99)
    assert summary["halt_level"] == pytest.approx(probe.halt_threshold)
    assert 0 <= summary["real_path_share_above_halt"] <= 1
    assert summary["real_path_disagreement_mean"] > 0
    assert out.with_suffix(".png").read_bytes()[:8] == PNG_SIGNATURE
    assert "ppo, 2 episode(s): real" in done.stdout
