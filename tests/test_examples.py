"""The examples/ scripts run as a user runs them: a subprocess, from the repository root."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_RETURN = re.compile(r"real (\S+) return (-?[\d.]+) \+- ([\d.]+) over (\d+) episodes")


def run_example(name: str, *args: str, timeout: float) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_cleanrl_style_ppo_trained_in_the_dream_balances_the_real_cartpole():
    out = run_example("cleanrl_ppo_dream.py", timeout=900)
    env_id, mean, _, episodes = REAL_RETURN.search(out).groups()
    assert env_id == "CartPole-v1" and int(episodes) == 20
    assert float(mean) >= 475, out


@pytest.mark.slow
def test_rllib_ppo_on_two_env_runners_trained_in_the_dream_balances_the_real_cartpole():
    pytest.importorskip("ray.rllib")
    out = run_example("rllib_dream.py", "--max-minutes", "10", timeout=900)
    env_id, mean, _, episodes = REAL_RETURN.search(out).groups()
    assert env_id == "CartPole-v1" and int(episodes) == 20 and "(2 env runners" in out
    assert float(mean) >= 475, out


@pytest.mark.slow
def test_torchrl_example_collects_batches_from_the_batched_dream():
    pytest.importorskip("torchrl")
    out = run_example("torchrl_dream.py", "--num-envs", "32", "--batches", "2", timeout=300)
    assert "GymEnv: batch size (), action spec shape (1,)" in out
    # Each 200-step batch of 32 Pendulum dreams ends every one of them once (its time limit).
    assert out.count("(32, 200) steps, 32 episodes ended") == 2
