"""Gymnasium's v5 MuJoCo envs (``pip install "learned-envs[mujoco]"``), as a user takes them through
the CLI: collect in every format, fit, ``gym.make`` the dream, both env checkers, render, score.

InvertedDoublePendulum-v5 (9 dims, whose observation holds sines and cosines) and Hopper-v5 (11
dims, torso x left out of the observation) keep these fast; HalfCheetah-v5 checks the D4RL score.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("mujoco")

from learned_envs.data import load  # noqa: E402
from learned_envs.evaluation.scores import normalized_score  # noqa: E402

TINY = ["--hidden-size", "16", "--layers", "1", "--ensemble-size", "2", "--elites", "1", "--max-updates", "40"]
FORMATS = {"npz": "data.npz", "hdf5": "data.hdf5", "sb3": "data.pkl", "minari": "minari_ds"}


def cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LEARNED_ENVS_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "learned_envs.cli", *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_reader_takes_a_mujoco_log(fmt, tmp_path):
    if fmt == "minari":
        pytest.importorskip("minari")
    if fmt == "hdf5":
        pytest.importorskip("h5py")
    out = tmp_path / FORMATS[fmt]
    cli("collect", "InvertedDoublePendulum-v5", "--steps", "150", "--out", str(out), "--format", fmt, "--seed", "4", home=tmp_path)
    data = load(out)
    real = gym.make("InvertedDoublePendulum-v5")
    assert len(data) == 150 and data.observations.shape == (150, 9) and data.actions.shape == (150, 1)
    assert data.metadata["source_env_id"] == "InvertedDoublePendulum-v5"
    # the same seed reproduces the logged start state in the real env
    first, _ = real.reset(seed=4)
    np.testing.assert_allclose(data.observations[0], first, rtol=1e-5, atol=1e-6)
    assert data.terminations.sum() >= 1  # random actions drop the pole within 150 steps


def _offscreen_gl_missing() -> str | None:
    """Why MuJoCo cannot draw offscreen on this machine (no EGL/OSMesa library), or None if it can.
    Gymnasium's own env is asked, not ours, so a fault of our renderer still fails the test."""
    from learned_envs.dreams.render import quiet_headless_sdl

    quiet_headless_sdl()  # the same GL backend choice the dream makes
    env = gym.make("InvertedPendulum-v5", render_mode="rgb_array")
    try:
        env.reset(seed=0)
        env.render()
    except Exception as exc:  # mujoco.FatalError, or the GL binding's ImportError/AttributeError
        return f"{type(exc).__name__}: {exc}"
    finally:
        env.close()
    return None


def test_fit_make_check_render_a_mujoco_dream(tmp_path):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    missing = _offscreen_gl_missing()
    if missing:
        pytest.skip(f"MuJoCo has no offscreen OpenGL here ({missing[:120]}); install libEGL or OSMesa")

    cli("collect", "Hopper-v5", "--steps", "400", "--out", str(tmp_path / "hopper.npz"), "--seed", "1", home=tmp_path)
    cli("fit", str(tmp_path / "hopper.npz"), "--id", "Dream-TestHopper-v0", *TINY, home=tmp_path)
    os.environ["LEARNED_ENVS_HOME"] = str(tmp_path)  # the autouse fixture restores it
    from learned_envs.registry import register_all

    register_all()
    dream = gym.make("Dream-TestHopper-v0", render_mode="rgb_array")
    assert dream.observation_space == gym.make("Hopper-v5").observation_space
    check_env(dream.unwrapped, skip_render_check=False)
    sb3_check_env(gym.make("Dream-TestHopper-v0"))
    obs, _ = dream.reset(seed=0)
    frames = [dream.render()]
    for _ in range(3):
        obs, reward, terminated, truncated, _ = dream.step(dream.action_space.sample())
        frames.append(dream.render())
    assert frames[0].shape == (480, 480, 3) and frames[0].dtype == np.uint8
    assert any(np.abs(f.astype(int) - frames[0].astype(int)).mean() > 0 for f in frames[1:])  # the hopper moves


def test_score_prints_the_d4rl_normalized_score(tmp_path):
    agent = tmp_path / "sac.zip"
    cli("train", "HalfCheetah-v5", "--algo", "SAC", "--steps", "64", "--out", str(agent), home=tmp_path)
    row = json.loads(cli("score", str(agent), "HalfCheetah-v5", "--episodes", "1", "--json", home=tmp_path).stdout.strip().splitlines()[-1])
    assert row["env_id"] == "HalfCheetah-v5" and row["episodes"] == 1
    assert row["d4rl_normalized"] == pytest.approx(normalized_score("HalfCheetah-v5", row["return_mean"]))
    line = cli("score", str(agent), "HalfCheetah-v5", "--episodes", "1", home=tmp_path).stdout
    assert f"D4RL normalised score {row['d4rl_normalized']:.1f}" in line
