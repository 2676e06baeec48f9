"""DreamEnv as a user meets it: gym.make, both env checkers, seeding, starts, rendering, registration."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import learned_envs
from tests.helpers import only_expected_checker_warnings


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append(np.append(obs, [reward, terminated, truncated]))
        if terminated or truncated:
            obs, _ = env.reset()
            out.append(obs)
    return np.concatenate(out)


def test_both_env_checkers(small_dream_id):
    """A freshly fitted dream; the shipped ones are checked in test_shipped_suite."""
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    env_id = small_dream_id
    with only_expected_checker_warnings():
        gym_check(gym.make(env_id, render_mode="rgb_array").unwrapped)
        sb3_check(gym.make(env_id).unwrapped, warn=False)


def test_step_types_and_space(small_dream_id):
    env = gym.make(small_dream_id)
    obs, info = env.reset(seed=0)
    assert obs.dtype == env.observation_space.dtype and obs in env.observation_space
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert type(reward) is float and type(terminated) is bool and type(truncated) is bool
    assert obs.dtype == np.float32 and obs in env.observation_space
    assert {"disagreement", "clipped_dims", "halted", "penalty"} <= set(info)
    assert info["disagreement"] == -1.0  # not asked for: not computed (a pass through every member)
    env = gym.make(small_dream_id, uncertainty_info=True)
    env.reset(seed=0)
    assert env.step(env.action_space.sample())[4]["disagreement"] >= 0


def test_step_info_deep_copies_as_a_dict(small_dream_id):
    """SB3's DummyVecEnv deep-copies each step's info and adds arrays to it; the copy must be deep."""
    import copy
    import pickle

    env = gym.make(small_dream_id)
    env.reset(seed=0)
    info = env.step(env.action_space.sample())[4]
    assert isinstance(info, dict) and all(type(v) in (float, int, bool) for v in info.values())
    info["terminal_observation"] = np.zeros(4, np.float32)
    copied = copy.deepcopy(info)
    assert copied == {**info, "terminal_observation": copied["terminal_observation"]} and copied is not info
    assert copied["terminal_observation"] is not info["terminal_observation"]
    copied["terminal_observation"][0] = 1.0
    copied["halted"] = True
    assert info["terminal_observation"][0] == 0.0 and info["halted"] is False
    shared = [1]
    nested = copy.deepcopy({"a": info, "b": shared, "c": shared} | {"d": type(info)({"x": shared})})
    assert nested["b"] is nested["c"] is nested["d"]["x"] is not shared  # the memo is shared, as deepcopy's contract says
    assert pickle.loads(pickle.dumps(info)).keys() == info.keys()


def test_same_seed_same_actions_same_episode(small_dream_id):
    actions = np.random.default_rng(0).integers(0, 2, 200)
    a = _rollout(gym.make(small_dream_id), 42, actions)
    b = _rollout(gym.make(small_dream_id), 42, actions)
    c = _rollout(gym.make(small_dream_id), 43, actions)
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_reset_draws_logged_starts(small_dream_id, small_checkpoint):
    from learned_envs.checkpoint import load_checkpoint

    starts = load_checkpoint(small_checkpoint).start_states.numpy()
    env = gym.make(small_dream_id)
    seen = {tuple(env.reset(seed=s)[0]) for s in range(30)}
    assert all(any(np.allclose(o, row) for row in starts) for o in seen)
    assert len(seen) > 5  # draws vary with the seed


def test_initial_observation_option(small_dream_id):
    env = gym.make(small_dream_id)
    start = np.array([0.01, -0.02, 0.03, 0.0], dtype=np.float32)
    obs, _ = env.reset(seed=0, options={"initial_observation": start})
    np.testing.assert_array_equal(obs, start)
    with pytest.raises(ValueError, match="outside the observation space"):
        env.reset(options={"initial_observation": np.array([99.0, 0, 0, 0], np.float32)})


@pytest.mark.parametrize("action", [2, -1, 1.7, np.array([1, 0])])
def test_action_outside_the_space_is_an_error(small_dream_id, action):
    env = gym.make(small_dream_id)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


def test_truncation_at_max_episode_steps(small_dream_id):
    env = gym.make(small_dream_id, max_episode_steps=5, out_of_bounds="clip", halt_threshold=None)
    # From the centre, alternating pushes keep the pole up for 5 steps.
    env.reset(seed=0, options={"initial_observation": np.zeros(4, np.float32)})
    flags = [env.step(i % 2)[2:4] for i in range(5)]
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])


def test_learned_termination_fires(small_dream_id):
    """A pole far past CartPole's 12 degree limit: the learned head says the episode is over."""
    env = gym.make(small_dream_id, temperature=0.0)
    env.reset(seed=0, options={"initial_observation": np.array([0.0, 0.0, 0.2, 1.5], np.float32)})
    _, _, terminated, _, info = env.step(1)
    assert terminated


def test_render_uses_source_renderer(small_dream_id):
    env = gym.make(small_dream_id, render_mode="rgb_array")
    env.reset(seed=0, options={"initial_observation": np.array([-1.0, 0, 0.1, 0], np.float32)})
    left = env.render()
    env.reset(seed=0, options={"initial_observation": np.array([1.0, 0, -0.1, 0], np.float32)})
    right = env.render()
    assert left.shape == (400, 600, 3) and left.dtype == np.uint8
    assert not np.array_equal(left, right)  # the drawn cart follows the dream state


def test_a_dream_steps_without_its_source_envs_package(small_checkpoint, tmp_path):
    # A HalfCheetah dream on a machine without mujoco: the source id is registered, its module is missing.
    from tests.helpers import rewrite_metadata

    gym.register("Test-MissingPackage-v0", entry_point="learned_envs_no_such_package_here:Env")
    path = rewrite_metadata(small_checkpoint, tmp_path / "orphan.safetensors",
                            lambda meta: meta.update(source_env_id="Test-MissingPackage-v0"), digest="restamp")
    learned_envs.register_dream("Test-Orphan-v0", path)
    env = gym.make("Test-Orphan-v0")
    env.reset(seed=0)
    assert env.step(env.action_space.sample())[0].shape == (4,)
    envs = gym.make_vec("Test-Orphan-v0", num_envs=3)
    envs.reset(seed=0)
    assert envs.step(np.array([0, 1, 0]))[0].shape == (3, 4)
    with pytest.raises(ImportError, match="learned_envs_no_such_package_here"):
        drawn = gym.make("Test-Orphan-v0", render_mode="rgb_array")
        drawn.reset(seed=0)
        drawn.render()


def test_register_dream_any_file(small_checkpoint):
    learned_envs.register_dream("Test-Registered-v3", small_checkpoint, temperature=0.0, max_episode_steps=7)
    env = gym.make("Test-Registered-v3")
    assert env.spec.max_episode_steps == 7 and env.unwrapped.core.temperature == 0.0
    assert any(r["id"] == "Test-Registered-v3" for r in learned_envs.registered_dreams())
    # gym.make kwargs still override the registered defaults
    assert gym.make("Test-Registered-v3", temperature=0.5).unwrapped.core.temperature == 0.5


def test_unknown_option_is_an_error(small_dream_id):
    with pytest.raises(TypeError, match="unknown dream option"):
        gym.make(small_dream_id, temprature=1.0)


def test_fresh_interpreter_without_import(tmp_path):
    code = (
        "import sys, gymnasium as gym\n"
        "env = gym.make('learned_envs:Dream-CartPole-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(env.spec.max_episode_steps, obs.shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "LEARNED_ENVS_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["500", "(4,)"]


def test_import_reads_headers_only():
    code = "import sys, learned_envs; print('torch' in sys.modules, 'Dream-CartPole-v0' in __import__('gymnasium').registry)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "True"], out.stderr
