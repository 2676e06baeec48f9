"""``DreamSB3VecEnv`` / ``learned_envs.sb3.make_vec_env`` against SB3's own conventions (``DummyVecEnv``)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize

from learned_envs.sb3 import DreamSB3VecEnv, make_vec_env
from tests._determinism import DETERMINISTIC, pin_start_states


def test_make_vec_env_builds_a_monitored_batch(small_dream_id):
    venv = make_vec_env(small_dream_id, n_envs=64, seed=0)
    assert isinstance(venv, VecMonitor) and isinstance(venv.unwrapped, DreamSB3VecEnv)
    assert venv.num_envs == 64 and venv.unwrapped.core.max_episode_steps == gym.spec(small_dream_id).max_episode_steps
    obs = venv.reset()
    assert obs.shape == (64, 4) and obs.dtype == np.float32
    obs, rewards, dones, infos = venv.step(np.array([venv.action_space.sample() for _ in range(64)]))
    assert obs.shape == (64, 4) and rewards.shape == dones.shape == (64,) and rewards.dtype == np.float32
    assert len(infos) == 64 and all({"disagreement", "TimeLimit.truncated"} <= set(info) for info in infos)
    assert make_vec_env(f"learned_envs:{small_dream_id}", monitor=False).num_envs == 1


def test_make_vec_env_refuses_a_non_dream():
    with pytest.raises(ValueError, match="not a learned-envs dream"):
        make_vec_env("CartPole-v1")


def test_no_render_mode_warning(small_checkpoint):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="The `render_mode` attribute is not defined")
        venv = DreamSB3VecEnv(str(small_checkpoint), num_envs=2, render_mode="rgb_array")
    assert venv.render_mode == "rgb_array" and "rgb_array" in venv.metadata["render_modes"]
    venv.reset()
    image = venv.render()
    assert image.dtype == np.uint8 and image.ndim == 3


def test_matches_dummy_vec_env(small_dream_id):
    """Step for step, the batched VecEnv returns what DummyVecEnv over single DreamEnvs returns."""
    n, limit = 5, 10
    ours = make_vec_env(small_dream_id, n_envs=n, max_episode_steps=limit, monitor=False, **DETERMINISTIC)
    ref = DummyVecEnv([lambda: gym.make(small_dream_id, max_episode_steps=limit, **DETERMINISTIC)] * n)
    for core in [ours.core, *(env.unwrapped.core for env in ref.envs)]:
        pin_start_states(core)
    ours.seed(0)
    ref.seed(0)
    np.testing.assert_allclose(ours.reset(), ref.reset(), atol=1e-6)
    rng = np.random.default_rng(0)
    ends = {True: 0, False: 0}  # TimeLimit.truncated -> count of dones
    for t in range(40):
        actions = rng.integers(2, size=n)
        obs, rew, done, infos = ours.step(actions)
        ref_obs, ref_rew, ref_done, ref_infos = ref.step(actions)
        np.testing.assert_allclose(obs, ref_obs, atol=1e-5, err_msg=f"step {t}")
        np.testing.assert_allclose(rew, ref_rew, atol=1e-5, err_msg=f"step {t}")
        np.testing.assert_array_equal(done, ref_done, err_msg=f"step {t}")
        assert rew.dtype == ref_rew.dtype and done.dtype == ref_done.dtype
        for i, (info, ref_info) in enumerate(zip(infos, ref_infos)):
            assert set(info) == set(ref_info), f"step {t} row {i}"
            assert info["TimeLimit.truncated"] == ref_info["TimeLimit.truncated"], f"step {t} row {i}"
            if "terminal_observation" in ref_info:
                np.testing.assert_allclose(info["terminal_observation"], ref_info["terminal_observation"], atol=1e-5)
                ends[info["TimeLimit.truncated"]] += 1
    assert ends[True] > 0 and ends[False] > 0, f"the run must cover both kinds of end: {ends}"


def rollout(venv, seed: int, steps: int = 12) -> list[np.ndarray]:
    venv.seed(seed)
    out = [venv.reset()]
    for _ in range(steps):
        obs, rew, _, _ = venv.step(np.arange(venv.num_envs) % 2)
        out += [obs, rew]
    return out


def test_seed_makes_runs_reproducible(small_dream_id):
    venv = make_vec_env(small_dream_id, n_envs=6)
    first, again, other = rollout(venv, 7), rollout(venv, 7), rollout(venv, 8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
    assert make_vec_env(small_dream_id, n_envs=6, seed=7).reset().tolist() == first[0].tolist()


def test_terminal_observation_is_the_last_step(small_dream_id):
    """Same seed and actions: SB3's terminal observation is the step the Gymnasium face returns
    (NEXT_STEP, not yet reset), and the row comes back reset in the same step."""
    limit, n = 4, 6
    venv = make_vec_env(small_dream_id, n_envs=n, seed=3, max_episode_steps=limit, monitor=False)
    gym_venv = gym.make_vec(small_dream_id, num_envs=n, max_episode_steps=limit)
    np.testing.assert_array_equal(venv.reset(), gym_venv.reset(seed=3)[0])
    age = np.zeros(n, dtype=int)
    for t in range(limit):
        actions = np.full(n, t % 2)
        obs, _, dones, infos = venv.step(actions)
        ref_obs, _, term, trunc, _ = gym_venv.step(actions)
        age += 1
        np.testing.assert_array_equal(dones, term | trunc)
        if dones.any():
            break
    assert dones.any()
    for i in np.flatnonzero(dones):
        np.testing.assert_array_equal(infos[i]["terminal_observation"], ref_obs[i])
        assert infos[i]["TimeLimit.truncated"] == bool(trunc[i] and not term[i]) and (age[i] == limit) >= infos[i]["TimeLimit.truncated"]
    assert not any("terminal_observation" in infos[i] for i in np.flatnonzero(~dones))
    np.testing.assert_array_equal(obs[~dones], ref_obs[~dones])
    pool = venv.core.start_states
    assert np.isclose(obs[dones][:, None], pool[None]).all(-1).any(-1).all(), "done rows come back reset, in the same step"


def test_shared_attributes(small_dream_id):
    venv = make_vec_env(small_dream_id, n_envs=3)
    assert venv.get_attr("temperature") == [1.0] * 3 and venv.get_attr("render_mode", indices=[0]) == [None]
    venv.set_attr("temperature", 0.0)
    venv.set_attr("propagation", "mean")
    assert venv.unwrapped.core.settings.temperature == 0.0 and venv.get_attr("propagation") == ["mean"] * 3
    with pytest.raises(ValueError, match="temperature"):
        venv.set_attr("temperature", -1.0)
    assert venv.unwrapped.core.settings.temperature == 0.0, "a rejected value changes nothing"
    assert venv.env_is_wrapped(gym.Wrapper) == [False] * 3
    assert venv.env_method("get_images", indices=[0, 2]) == [[None] * 3] * 2
    assert venv.has_attr("temperature") and not venv.has_attr("no_such_attribute")


def test_env_method_reset_restarts_only_the_given_dreams(small_dream_id):
    venv = make_vec_env(small_dream_id, n_envs=3, seed=0, monitor=False)
    venv.reset()
    for _ in range(3):
        venv.step(np.zeros(3, dtype=np.int64))
    before = venv.core.observations()
    start = np.array([0.01, -0.02, 0.03, 0.0], dtype=np.float32)
    results = venv.env_method("reset", indices=[1], options={"initial_observation": start})
    assert len(results) == 1 and results[0][1] == {}
    np.testing.assert_array_equal(results[0][0], start)
    after = venv.core.observations()
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
    np.testing.assert_array_equal(after[1], start)
    assert venv.core.elapsed.tolist() == [3, 0, 3]


def test_initial_observation_outside_the_space_is_refused(small_dream_id):
    venv = make_vec_env(small_dream_id, n_envs=2, monitor=False)
    venv.set_options({"initial_observation": np.array([99.0, 0.0, 0.0, np.nan], np.float32)})
    with pytest.raises(ValueError, match="outside the observation space"):
        venv.reset()


def test_render_fps_is_the_source_envs(small_dream_id):
    venv = make_vec_env(small_dream_id, n_envs=2, monitor=False)
    assert venv.metadata["render_fps"] == gym.make("CartPole-v1").metadata["render_fps"]


def test_vec_normalize_and_evaluate_policy(small_dream_id):
    venv = VecNormalize(make_vec_env(small_dream_id, n_envs=8, seed=0, max_episode_steps=20))
    venv.reset()
    done_count = terminal_count = 0
    for _ in range(25):
        obs, _, dones, infos = venv.step(np.zeros(8, dtype=np.int64))
        done_count += int(dones.sum())
        terminal_count += sum("terminal_observation" in info for info in infos)
    assert done_count >= 8 and terminal_count == done_count, "every done row, and only those, carries a terminal observation"
    assert venv.obs_rms.count > 25 * 8 and np.isfinite(obs).all()
    venv4 = make_vec_env(small_dream_id, n_envs=4, seed=0, max_episode_steps=20)
    model = PPO("MlpPolicy", venv4, n_steps=8, batch_size=32, seed=0, device="cpu")
    with warnings.catch_warnings():
        # evaluate_policy warns when no Monitor lets it see whole episodes
        warnings.filterwarnings("error", message="Evaluation environment is not wrapped")
        episode_rewards, episode_lengths = evaluate_policy(model, model.get_env(), n_eval_episodes=6, return_episode_rewards=True)
    assert len(episode_lengths) == 6 and all(1 <= n <= 20 for n in episode_lengths)


@pytest.mark.parametrize("algo", [A2C, DQN, PPO], ids=lambda a: a.__name__)
def test_algorithms_learn(small_dream_id, algo):
    venv = make_vec_env(small_dream_id, n_envs=4, seed=0, max_episode_steps=50)
    extra = {"learning_starts": 50, "buffer_size": 1000} if algo is DQN else {"n_steps": 16}
    model = algo("MlpPolicy", venv, seed=0, device="cpu", **extra)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(400)
    assert model.num_timesteps >= 400 and len(model.ep_info_buffer) > 0
    # It learned from the dream's transitions (gradient steps moved the weights), and acts in its space.
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters()))
    actions, _ = model.predict(venv.reset(), deterministic=True)
    assert all(venv.action_space.contains(a) for a in actions)


def test_ppo_trains_on_eight_dreams(small_dream_id):
    """A short PPO run: the loss is optimised (weights move) and episodes are logged from the monitor."""
    torch.manual_seed(0)
    venv = make_vec_env(small_dream_id, n_envs=8, seed=0)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=4, seed=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(1024)
    assert model.num_timesteps == 1024
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters()))
    assert len(model.ep_info_buffer) > 0 and all(ep["l"] >= 1 for ep in model.ep_info_buffer)


def test_sac_learns_on_a_continuous_dream():
    """The shipped Dream-Pendulum-v0 has a Box action space: SAC trains on the batch unchanged."""
    from stable_baselines3 import SAC

    venv = make_vec_env("Dream-Pendulum-v0", n_envs=2, seed=0, max_episode_steps=50)
    model = SAC("MlpPolicy", venv, learning_starts=50, buffer_size=1000, batch_size=64, seed=0, device="cpu")
    actor_before = [p.detach().clone() for p in model.actor.parameters()]
    model.learn(300)
    assert model.num_timesteps >= 300 and len(model.ep_info_buffer) > 0
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, model.actor.parameters())), "the actor was trained"
    # Its replay buffer holds the dream's transitions, finite and inside the Box observation space.
    stored = model.replay_buffer.observations[: model.replay_buffer.pos].reshape(-1, *venv.observation_space.shape)
    assert len(stored) > 0 and np.isfinite(stored).all()
    assert ((stored >= venv.observation_space.low) & (stored <= venv.observation_space.high)).all()
