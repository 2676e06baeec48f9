"""The shipped dreams, each as a user meets it: registered at import, both env checkers, the
source env's renderer drawing dream states, and a vector entry point."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import learned_envs
from learned_envs.checkpoint import read_metadata
from learned_envs.dreams.vector import DreamVectorEnv
from tests.helpers import only_expected_checker_warnings

SHIPPED = {
    "Dream-CartPole-v0": "CartPole-v1",
    "Dream-Pendulum-v0": "Pendulum-v1",
    "Dream-Acrobot-v0": "Acrobot-v1",
    "Dream-MountainCar-v0": "MountainCar-v0",
    "Dream-MountainCarContinuous-v0": "MountainCarContinuous-v0",
}


def test_every_shipped_dream_is_registered_with_its_recipe():
    shipped = {r["id"]: r for r in learned_envs.registered_dreams() if r["origin"] == "shipped"}
    assert set(shipped) == set(SHIPPED)
    for dream_id, source in SHIPPED.items():
        checkpoint = Path(shipped[dream_id]["checkpoint"])
        meta = read_metadata(checkpoint)
        assert meta["source_env_id"] == source
        assert meta["dataset"]["behaviour_policy"]["kind"] in ("random", "mixture")
        assert (checkpoint.parent / f"rebuild_{dream_id}.sh").is_file(), "the recipe sits beside the checkpoint"


@pytest.mark.parametrize("dream_id", SHIPPED)
def test_spaces_and_time_limit_are_the_source_envs(dream_id):
    dream, real = gym.make(dream_id), gym.make(SHIPPED[dream_id])
    assert dream.observation_space == real.observation_space and dream.action_space == real.action_space
    assert dream.spec.max_episode_steps == real.spec.max_episode_steps


@pytest.mark.parametrize("dream_id", SHIPPED)
def test_both_env_checkers(dream_id):
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    with only_expected_checker_warnings():
        gym_check(gym.make(dream_id, render_mode="rgb_array").unwrapped)
        sb3_check(gym.make(dream_id).unwrapped, warn=False)


@pytest.mark.parametrize("dream_id", SHIPPED)
def test_render_draws_dream_states_with_the_source_renderer(dream_id):
    env = gym.make(dream_id, render_mode="rgb_array")
    real = gym.make(SHIPPED[dream_id], render_mode="rgb_array")
    real.reset(seed=0)
    # Two states a quarter and three quarters across the dream's support box: the frames must differ.
    low, high = (b.cpu().numpy() for b in (env.unwrapped.core.obs_low, env.unwrapped.core.obs_high))
    frames = []
    for share in (0.25, 0.75):
        env.reset(seed=0, options={"initial_observation": (low + share * (high - low)).astype(np.float32)})
        frames.append(env.render())
    assert frames[0].shape == real.render().shape and frames[0].dtype == np.uint8
    assert not np.array_equal(frames[0], frames[1])
    env.close()
    real.close()


@pytest.mark.parametrize("dream_id", SHIPPED)
def test_vector_entry_point_steps_in_one_batch(dream_id):
    envs = gym.make_vec(dream_id, num_envs=5)
    assert isinstance(envs, DreamVectorEnv)
    obs, _ = envs.reset(seed=3)
    for _ in range(10):
        obs, rewards, terminated, truncated, _ = envs.step(envs.action_space.sample())
    assert obs.shape == (5, *envs.single_observation_space.shape) and obs in envs.observation_space
    assert rewards.dtype == np.float64 and terminated.dtype == truncated.dtype == np.bool_
    envs.close()
