"""Offline model-based RL pieces: branched rollouts from logged states, the offline preset, the
mixed replay buffer, and ``train`` needing no flag but ``--out`` after ``fit --preset offline``."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import SAC

from learned_envs import presets
from learned_envs.checkpoint import load_checkpoint, read_metadata
from learned_envs.data import save
from learned_envs.data.collecting import collect
from learned_envs.fitting import FitConfig, FitError, fit
from learned_envs.models.ensemble import EnsembleConfig
from learned_envs.registry import register_dream
from learned_envs.replay import MixedReplayBuffer
from learned_envs.training import train_in_dream
from tests.helpers import TINY_FIT


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory):
    """400 random Pendulum-v1 transitions as a file, and a tiny dream fitted on it with the offline preset."""
    folder = tmp_path_factory.mktemp("offline")
    data = collect("Pendulum-v1", 400, seed=5, progress=False)
    path = save(data, folder / "pendulum.npz")
    dream = fit(path, folder / "dream.safetensors", source_env="Pendulum-v1", config=FitConfig(**TINY_FIT),
                preset="offline", reset_states=300, progress=False)
    return data, path, dream


def test_preset_stores_knobs_horizon_logged_states_and_recipe(pendulum):
    data, _, dream = pendulum
    meta = read_metadata(dream)
    assert meta["dream"]["reset_from"] == "logged" and meta["dream"]["max_episode_steps"] == 5
    assert meta["dream"]["uncertainty_penalty"] > 0 and meta["dream"]["start_share"] == 0.5
    assert meta["dream"]["bounds_margin"] == 1.0  # where the preset's figures were measured, not the knob's default
    assert meta["training"] == {"preset": "offline", "algo": "SAC", "steps": 600_000}
    states = load_checkpoint(dream).reset_states.numpy()
    assert states.shape == (300, 3)
    logged = {tuple(row) for row in data.observations.astype(np.float32)}
    assert all(tuple(row) in logged for row in states), "every reset state is a logged observation"


def test_branched_rollouts_start_anywhere_logged_and_truncate_at_the_horizon(pendulum):
    data, _, dream = pendulum
    register_dream("Test-Offline-Pendulum-v0", dream)
    env = gym.make("Test-Offline-Pendulum-v0", start_share=0.0)  # every reset from the logged states (the preset's share: below)
    pool = load_checkpoint(dream).reset_states.numpy()
    starts = {tuple(row) for row in data.episode_starts().astype(np.float32)}
    resets = [env.reset(seed=i)[0] for i in range(40)]
    assert all(np.isclose(pool, obs).all(axis=1).any() for obs in resets)
    assert sum(tuple(obs) not in starts for obs in resets) > 30, "resets come from every logged state, not episode starts"
    env.reset(seed=0)
    for step in range(5):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated
    assert truncated and step == 4, "the 5-step horizon is a truncation, which agents bootstrap"
    # The knob is a gym.make kwarg like any other: episode starts again on request.
    plain = gym.make("Test-Offline-Pendulum-v0", reset_from="starts", max_episode_steps=200)
    assert all(tuple(plain.reset(seed=i)[0]) in starts for i in range(10))


def test_start_share_draws_that_share_of_resets_from_the_episode_starts(pendulum):
    data, _, dream = pendulum
    register_dream("Test-Offline-Share-v0", dream)
    starts = {tuple(row) for row in data.episode_starts().astype(np.float32)}
    # 400 rows of Pendulum's 200-step episodes: 2 starts, so a uniform logged draw almost never hits one.
    for share, low, high in ((0.0, 0, 10), (0.5, 130, 270), (1.0, 400, 400)):
        env = gym.make("Test-Offline-Share-v0", start_share=share)
        hits = sum(tuple(env.reset(seed=i)[0]) in starts for i in range(400))
        assert low <= hits <= high, (share, hits)
    # The draws are the face's seeded generator's: the same seed, the same resets.
    env = gym.make("Test-Offline-Share-v0", start_share=0.5)
    np.testing.assert_array_equal(env.reset(seed=3)[0], env.reset(seed=3)[0])
    with pytest.raises(ValueError, match="start_share must be <= 1"):
        gym.make("Test-Offline-Share-v0", start_share=1.5)


def test_fit_records_disagreement_quantiles_and_the_halt_reads_them(pendulum):
    from learned_envs.dream_settings import DISAGREEMENT_QUANTILES
    from learned_envs.dreams.core import DreamCore
    from learned_envs.fitting.dream import train_disagreement

    data, _, dream = pendulum
    checkpoint = load_checkpoint(dream)
    metrics = checkpoint.metadata["fit"]["metrics"]
    recorded = metrics["train_disagreement_quantiles"]
    assert [float(q) for q in recorded] == list(DISAGREEMENT_QUANTILES)
    values = train_disagreement(checkpoint.model, data)
    assert values.shape == (len(data),)
    assert recorded["0.99"] == pytest.approx(float(np.quantile(values, 0.99)), rel=1e-5)
    assert recorded["1.0"] == pytest.approx(metrics["max_train_disagreement"], rel=1e-5)
    assert DreamCore(checkpoint, halt_threshold="auto", halt_quantile=0.99).halt_threshold == pytest.approx(recorded["0.99"])
    # Between recorded levels: linear interpolation.
    between = DreamCore(checkpoint, halt_threshold="auto", halt_quantile=0.985, halt_factor=2.0).halt_threshold
    assert between == pytest.approx(2 * (recorded["0.98"] + recorded["0.99"]) / 2)
    assert DreamCore(checkpoint, halt_threshold="auto").halt_threshold == metrics["max_train_disagreement"]
    # The penalty's threshold reads the same record (its own quantile knob, 0.99 by default).
    soft = DreamCore(checkpoint, uncertainty_penalty=1.0, penalty_of="disagreement", penalty_threshold="auto")
    assert soft.penalty_threshold == pytest.approx(recorded["0.99"]) and soft.halt_threshold is None
    assert DreamCore(checkpoint, uncertainty_penalty=1.0, penalty_of="disagreement", penalty_threshold="auto",
                     penalty_quantile=0.5).penalty_threshold == pytest.approx(recorded["0.5"])


def test_reset_from_logged_without_stored_states_is_refused(small_checkpoint):
    register_dream("Test-NoStates-v0", small_checkpoint)
    with pytest.raises(ValueError, match="reset_from='logged' needs logged states.*--reset-states"):
        gym.make("Test-NoStates-v0", reset_from="logged")


def test_fit_refuses_logged_default_without_states(pendulum, tmp_path):
    _, path, _ = pendulum
    with pytest.raises(FitError, match="reset_from='logged' needs logged states"):
        fit(path, tmp_path / "d.safetensors", config=FitConfig(**TINY_FIT), dream_defaults={"reset_from": "logged"},
            progress=False)
    assert not (tmp_path / "d.safetensors").exists()


def test_mixed_buffer_puts_the_logged_share_in_every_batch(pendulum):
    data, _, _ = pendulum
    env = gym.make("Pendulum-v1")
    buffer = MixedReplayBuffer(1000, env.observation_space, env.action_space, device="cpu", logged=data,
                               logged_fraction=0.25, seed=0)
    # The agent's own rows: recognisable by a reward no logged row has.
    for i in range(50):
        obs = np.zeros((1, 3), np.float32)
        buffer.add(obs, obs + 1, np.zeros((1, 1), np.float32), np.array([7.0]), np.array([False]), [{}])
    batch = buffer.sample(64)
    rewards = batch.rewards.numpy().ravel()
    assert (rewards == 7.0).sum() == 48 and (rewards != 7.0).sum() == 16
    logged = batch.observations.numpy()[rewards != 7.0]
    assert all(np.isclose(data.observations, row).all(axis=1).any() for row in logged)
    # Stored as SB3 stores an off-policy agent's Box actions: scaled to [-1, 1] (Pendulum's torque is in [-2, 2]).
    logged_rows = [int(np.flatnonzero(np.isclose(data.observations, row).all(axis=1))[0]) for row in logged]
    np.testing.assert_allclose(batch.actions.numpy()[rewards != 7.0], data.actions[logged_rows] / 2.0, rtol=1e-6)
    terminated = batch.dones.numpy().ravel()[rewards != 7.0]
    assert terminated.sum() == 0, "Pendulum never terminates: a logged truncation is not a done"
    with pytest.raises(ValueError, match="logged_fraction"):
        MixedReplayBuffer(10, env.observation_space, env.action_space, logged=data, logged_fraction=1.5)


def test_mixed_buffer_gives_n_step_returns_for_the_agents_rows_only(pendulum):
    data, _, _ = pendulum
    env = gym.make("Pendulum-v1")
    buffer = MixedReplayBuffer(1000, env.observation_space, env.action_space, device="cpu", logged=data,
                               logged_fraction=0.25, seed=0, n_steps=3, gamma=0.5)
    # One 10-step episode, its rewards 100, 200, ..., 1000 and its last row a termination: a row's
    # n-step return is r_t + r_t+1 / 2 + r_t+2 / 4, cut at the episode's end.
    for t in range(10):
        obs = np.full((1, 3), t, np.float32)
        buffer.add(obs, obs + 1, np.zeros((1, 1), np.float32), np.array([100.0 * (t + 1)]), np.array([t == 9]), [{}])
    batch = buffer.sample(64)
    step = batch.observations.numpy()[:, 0]
    rewards, discounts, dones = (x.numpy().ravel() for x in (batch.rewards, batch.discounts, batch.dones))
    own = rewards >= 100.0  # logged Pendulum rewards are <= 0
    assert own.sum() == 48
    for t, reward, discount, done, nxt in zip(step[own], rewards[own], discounts[own], dones[own],
                                              batch.next_observations.numpy()[own, 0]):
        ahead = min(3, 10 - int(t))
        assert reward == pytest.approx(sum(100.0 * (t + 1 + k) * 0.5**k for k in range(ahead)))
        assert discount == 0.5**ahead and nxt == t + ahead and done == (t + ahead == 10)
    # The logged rows are single real steps, bootstrapped one discount ahead.
    np.testing.assert_array_equal(discounts[~own], 0.5)
    for obs, nxt in zip(batch.observations.numpy()[~own], batch.next_observations.numpy()[~own]):
        row = int(np.flatnonzero(np.isclose(data.observations, obs).all(axis=1))[0])
        np.testing.assert_allclose(nxt, data.next_observations[row], rtol=1e-6)
    # One step (the default) is SB3's plain sampling: no discounts, the buffer's own gamma applies.
    one_step = MixedReplayBuffer(10, env.observation_space, env.action_space, logged=data)
    one_step.add(np.zeros((1, 3), np.float32), np.ones((1, 3), np.float32), np.zeros((1, 1), np.float32), np.array([7.0]),
                 np.array([False]), [{}])
    assert one_step.sample(40).discounts is None
    with pytest.raises(ValueError, match="n_steps must be a whole number >= 1, got 0"):
        MixedReplayBuffer(10, env.observation_space, env.action_space, logged=data, n_steps=0)


def test_n_step_returns_reach_the_recipes_buffer_at_the_agents_gamma(pendulum, tmp_path, capsys):
    _, _, dream = pendulum
    register_dream("Test-Offline-NStep-v0", dream)
    agent = train_in_dream("Test-Offline-NStep-v0", 64, seed=0, progress=False, gamma=0.999, n_step=5)
    buffer = agent.replay_buffer
    assert isinstance(buffer, MixedReplayBuffer) and (buffer.n_steps, buffer.gamma, agent.gamma) == (5, 0.999, 0.999)
    assert agent.n_steps == 1, "SB3's own n_steps would be ignored beside a custom buffer (with a warning)"
    assert train_in_dream("Test-Offline-NStep-v0", 32, seed=0, progress=False).replay_buffer.n_steps == 1
    with pytest.raises(ValueError, match="n-step returns are for off-policy agents .*, not PPO"):
        train_in_dream("Test-Offline-NStep-v0", 64, "PPO", progress=False, n_step=3)
    with pytest.raises(ValueError, match="one-step Bellman targets: n_step > 1"):
        train_in_dream("Test-Offline-NStep-v0", 32, progress=False, n_step=3, value_penalty=1.0)
    from learned_envs.cli import main

    out = tmp_path / "a.zip"
    assert main(["train", "Test-Offline-NStep-v0", "--steps", "32", "--out", str(out), "--n-step", "4"]) == 0
    assert main(["train", "Pendulum-v1", "--steps", "8", "--out", str(out), "--n-step", "4"]) == 2
    assert "--gamma and --n-step are for dreams; Pendulum-v1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "Test-Offline-NStep-v0", "--steps", "32", "--out", str(out), "--n-step", "0"])
    assert "--n-step: invalid positive whole number value: '0'" in capsys.readouterr().err


def test_train_uses_the_stored_recipe_and_the_recorded_data(pendulum, monkeypatch):
    _, _, dream = pendulum
    register_dream("Test-Offline-Train-v0", dream)
    torch.manual_seed(0)
    agent = train_in_dream("Test-Offline-Train-v0", 200, seed=0, progress=False)
    assert type(agent).__name__ == "SAC" and agent.n_envs == 16
    assert isinstance(agent.replay_buffer, MixedReplayBuffer) and agent.replay_buffer.logged_fraction == 0.05
    assert agent.num_timesteps >= 200
    # Another algorithm than the recipe's: the zoo's settings, and the step count must be given.
    with pytest.raises(ValueError, match="give the number of steps"):
        train_in_dream("Test-Offline-Train-v0", None, "PPO", progress=False)


def test_gamma_replaces_the_recipes_discount(pendulum):
    _, _, dream = pendulum
    register_dream("Test-Offline-Gamma-v0", dream)
    assert train_in_dream("Test-Offline-Gamma-v0", 32, seed=0, progress=False).gamma == 0.99
    agent = train_in_dream("Test-Offline-Gamma-v0", 32, seed=0, progress=False, gamma=0.999)
    assert agent.gamma == 0.999 and isinstance(agent.replay_buffer, MixedReplayBuffer)
    with pytest.raises(ValueError, match=r"gamma .* in \(0, 1\], not 1.5"):
        train_in_dream("Test-Offline-Gamma-v0", 32, seed=0, progress=False, gamma=1.5)


def test_train_starts_from_the_cloned_behaviour_on_request(pendulum, tmp_path, capsys):
    _, _, dream = pendulum
    register_dream("Test-Offline-Clone-v0", dream)
    # Held for the whole run: the clone's spread head (zero weights, the logged spread as bias) is untouched.
    agent = train_in_dream("Test-Offline-Clone-v0", 64, seed=0, progress=False, behaviour_start={"clone_steps": 50, "hold_steps": 10_000})
    assert not agent.actor.log_std.weight.any() and not agent.actor.latent_pi[0].weight.requires_grad
    plain = train_in_dream("Test-Offline-Clone-v0", 64, seed=0, progress=False)
    assert plain.actor.log_std.weight.any()
    with pytest.raises(ValueError, match="SAC, TD3 or DDPG, not PPO"):
        train_in_dream("Test-Offline-Clone-v0", 64, "PPO", progress=False, behaviour_start={"clone_steps": 50, "hold_steps": 0})
    from learned_envs.cli import main

    out = tmp_path / "a.zip"
    assert main(["train", "Test-Offline-Clone-v0", "--steps", "32", "--out", str(out), "--clone-behaviour", "20",
                 "--hold-actor", "16", "--anchor", "2.5", "--actor-every", "2"]) == 0 and out.exists()
    for flags in (["--anchor", "2.5"], ["--actor-every", "2"]):
        assert main(["train", "Test-Offline-Clone-v0", "--steps", "32", "--out", str(out), *flags]) == 2
        assert "give --clone-behaviour UPDATES too" in capsys.readouterr().err
    assert main(["train", "Test-Offline-Clone-v0", "--steps", "32", "--out", str(out), "--clone-behaviour", "20",
                 "--anchor-beta", "3"]) == 2
    assert "anchor_beta weights the anchor's pull: give an anchor too" in capsys.readouterr().err
    for flags in (["--clone-behaviour", "20"], ["--anchor", "2.5"], ["--anchor-beta", "3"], ["--actor-every", "2"],
                  ["--gamma", "0.999"]):
        assert main(["train", "Pendulum-v1", "--steps", "8", "--out", str(out), *flags]) == 2
        assert "--value-penalty, --gamma and --n-step are for dreams; Pendulum-v1" in capsys.readouterr().err
    assert main(["train", "Test-Offline-Clone-v0", "--steps", "32", "--out", str(out), "--gamma", "0.995"]) == 0
    assert SAC.load(out).gamma == 0.995


def test_train_takes_another_horizon_for_one_run(pendulum, tmp_path, capsys):
    _, _, dream = pendulum
    register_dream("Test-Offline-Horizon-v0", dream)
    # 64 steps of 16 dreams: four vector steps, so every dream ends two 2-step episodes (the stored horizon is 5).
    agent = train_in_dream("Test-Offline-Horizon-v0", 64, seed=0, progress=False, max_episode_steps=2)
    lengths = [episode["l"] for episode in agent.ep_info_buffer]
    assert len(lengths) == 32 and set(lengths) == {2}
    from learned_envs.cli import main

    code = main(["train", "Pendulum-v1", "--steps", "8", "--out", str(tmp_path / "a.zip"), "--max-episode-steps", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "--max-episode-steps" in err and "are for dreams; Pendulum-v1 is not a registered dream" in err


def test_train_refuses_when_the_recorded_data_changed(pendulum, tmp_path):
    data, _, _ = pendulum
    path = save(data, tmp_path / "moved.npz")
    dream = fit(path, tmp_path / "dream.safetensors", source_env="Pendulum-v1", config=FitConfig(**TINY_FIT),
                preset="offline", progress=False)
    save(data.select(np.arange(len(data)) < 100), path)  # the file the dream records, now other bytes
    register_dream("Test-Offline-Changed-v0", dream)
    with pytest.raises(ValueError, match="sha256 mismatch.*--logged-data"):
        train_in_dream("Test-Offline-Changed-v0", 100, progress=False)
    agent = train_in_dream("Test-Offline-Changed-v0", 100, progress=False, logged_data=data)
    assert len(agent.replay_buffer.logged_obs) == len(data)


def test_cli_fit_preset_then_train_with_no_other_flag(pendulum, tmp_path):
    _, path, _ = pendulum
    fit_cmd = [sys.executable, "-m", "learned_envs.cli", "fit", str(path), "--id", "Dream-TestOffline-v0", "--source-env",
               "Pendulum-v1", "--preset", "offline", "--max-updates", "20", "--hidden-size", "16", "--layers", "1",
               "--ensemble-size", "2", "--elites", "1"]
    subprocess.run(fit_cmd, check=True, capture_output=True)
    agent = tmp_path / "agent.zip"
    # --steps only to keep the test short (the stored budget is 400,000); no --algo, no knobs.
    done = subprocess.run([sys.executable, "-m", "learned_envs.cli", "train", "Dream-TestOffline-v0", "--out", str(agent),
                           "--steps", "64"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "wrote SAC agent" in done.stdout and agent.exists()


def test_logged_support_distance_is_the_nearest_neighbour_in_std_units(monkeypatch):
    from learned_envs.dreams import support

    rng = np.random.default_rng(0)
    logged = rng.normal(size=(500, 3)).astype(np.float32) * np.array([1.0, 10.0, 0.1], np.float32)
    queries = np.concatenate([logged[:5], rng.normal(size=(20, 3)).astype(np.float32) * 4])
    scaled = lambda x: (x - logged.mean(0)) / logged.std(0)  # noqa: E731
    expected = torch.cdist(torch.as_tensor(scaled(queries)), torch.as_tensor(scaled(logged))).min(1).values.numpy()
    monkeypatch.setattr(support, "_BLOCK_ELEMENTS", 7 * len(queries))  # many blocks, one partial
    got = support.LoggedSupport(logged).distance(queries)
    np.testing.assert_allclose(got, expected, atol=2e-3)
    assert (got[:5] < 2e-3).all() and (got[5:] > 0.05).all()
    with pytest.raises(ValueError, match="at least one logged observation"):
        support.LoggedSupport(np.empty((0, 3), np.float32))


def test_support_halt_ends_exactly_the_steps_beyond_it(pendulum):
    from learned_envs.dreams.core import DreamCore
    from learned_envs.dreams.support import LoggedSupport

    _, _, dream = pendulum
    checkpoint = load_checkpoint(dream)
    kwargs = dict(num_envs=64, temperature=1.0, out_of_bounds="clip", max_episode_steps=None)
    actions = np.random.default_rng(1).uniform(-2, 2, size=(64, 1))

    def one_step(**knobs):
        core = DreamCore(checkpoint, **kwargs, **knobs)
        core.seed(np.random.default_rng(3))
        core.reset_rows()
        return core.step(actions)

    plain, never = one_step(), one_step(support_halt=1e9)
    np.testing.assert_array_equal(plain.observations, never.observations)
    np.testing.assert_array_equal(plain.terminated, never.terminated)
    assert not never.info["left_bounds"].any()
    distance = LoggedSupport(checkpoint.reset_states).distance(plain.observations)
    level = float(np.median(distance))
    cut = one_step(support_halt=level)
    np.testing.assert_array_equal(cut.observations, plain.observations)  # the halt changes ends, not the dynamics
    np.testing.assert_array_equal(cut.info["left_bounds"], distance > level)
    np.testing.assert_array_equal(cut.terminated, plain.terminated | (distance > level))
    np.testing.assert_array_equal(cut.rewards, plain.rewards)  # the model's reward, as the box's halt
    assert 0 < cut.info["left_bounds"].sum() < 64
    with pytest.raises(ValueError, match="support_halt must be >= 0"):
        DreamCore(checkpoint, support_halt=-1.0)


def test_support_halt_without_stored_states_is_refused(small_checkpoint):
    register_dream("Test-NoStates-Support-v0", small_checkpoint)
    with pytest.raises(ValueError, match="support_halt needs logged states.*--reset-states"):
        gym.make("Test-NoStates-Support-v0", support_halt=1.0)


def test_fit_records_neighbour_distances_and_support_halt_auto_reads_them(pendulum):
    from learned_envs.dream_settings import DISAGREEMENT_QUANTILES
    from learned_envs.dreams.core import DreamCore
    from learned_envs.fitting.dream import support_metrics

    checkpoint = load_checkpoint(pendulum[2])
    recorded = checkpoint.metadata["fit"]["metrics"]["support_distance_quantiles"]
    assert [float(q) for q in recorded] == list(DISAGREEMENT_QUANTILES)
    assert recorded == support_metrics(checkpoint.reset_states.numpy(), seed=0)["support_distance_quantiles"]
    assert 0 < recorded["0.5"] <= recorded["0.99"] <= recorded["1.0"]
    assert DreamCore(checkpoint, support_halt="auto").support_halt == pytest.approx(2 * recorded["0.99"])
    assert DreamCore(checkpoint, support_halt="auto", support_factor=1.0, support_quantile=0.5).support_halt == recorded["0.5"]
    states = checkpoint.reset_states.numpy()
    assert support_metrics(states[:1], seed=0) == {}
    with pytest.raises(ValueError, match="support_halt must be a number, 'auto' or None"):
        DreamCore(checkpoint, support_halt="far")


@pytest.fixture(scope="module")
def pendulum_members(pendulum, tmp_path_factory):
    """The same data fitted with three members kept: a spread over members needs more than one."""
    data, path, _ = pendulum
    config = FitConfig(**{**TINY_FIT, "model": EnsembleConfig(hidden_size=16, num_layers=1, ensemble_size=3), "num_elites": 3})
    return data, fit(path, tmp_path_factory.mktemp("members") / "dream.safetensors", source_env="Pendulum-v1",
                     config=config, preset="offline", reset_states=300, progress=False)


def test_every_member_predicts_at_once(pendulum_members):
    _, dream = pendulum_members
    model = load_checkpoint(dream).model
    state, action = torch.randn(7, 3), torch.rand(7, 1) * 4 - 2
    every = model.predict(state, action, temperature=0.0, members="all")
    assert every.next_state.shape == (model.num_members, 7, 3) and every.reward.shape == (model.num_members, 7)
    for m in range(model.num_members):
        one = model.predict(state, action, temperature=0.0, members=torch.full((7,), m))
        torch.testing.assert_close(every.next_state[m], one.next_state)
        torch.testing.assert_close(every.reward[m], one.reward)
        torch.testing.assert_close(every.termination_prob[m], one.termination_prob)
    with pytest.raises(ValueError, match="'mean' or 'all'"):
        model.predict(state, action, members="some")


def test_bellman_penalty_charges_the_members_spread_of_targets(pendulum, pendulum_members):
    from stable_baselines3 import TD3

    from learned_envs.dreams.core import DreamCore
    from learned_envs.replay import BellmanPenaltyBuffer

    data, dream = pendulum_members
    register_dream("Test-Offline-Bellman-v0", dream)
    venv = gym.make("Test-Offline-Bellman-v0")
    agent = TD3("MlpPolicy", venv, device="cpu", seed=0)  # a deterministic actor: the target is computable by hand
    core = DreamCore(dream, bounds_margin=0.5)
    buffer = BellmanPenaltyBuffer(100, venv.observation_space, venv.action_space, device="cpu", dream=core,
                                  value_penalty=2.0, logged=data, logged_fraction=0.25, seed=0)
    obs = data.observations[:40].astype(np.float32)
    for row in range(40):
        buffer.add(obs[row:row + 1], obs[row:row + 1], data.actions[row:row + 1] / 2.0, np.array([7.0]), np.array([False]), [{}])
    with pytest.raises(RuntimeError, match="bind the agent"):
        buffer.sample(8)
    buffer.bind(agent)
    batch = buffer.sample(32)
    own = batch.rewards.numpy().ravel()[:24]
    # By hand: every member's next state (clipped at the dream's box), the actor's action there, the
    # smaller target critic, and the std over members of r + gamma * (1 - end) * Q.
    action = batch.actions[:24] * 2.0  # back to the env's [-2, 2]
    nxt, reward, ended = core.member_outcomes(batch.observations[:24], action)
    low, high = core.obs_low, core.obs_high
    as_float64 = core.member_outcomes(batch.observations[:24].double(), action.double())  # a float64 space's buffer
    for ours, theirs in zip(as_float64, (nxt, reward, ended)):
        torch.testing.assert_close(ours, theirs)
    assert ((nxt >= low) & (nxt <= high)).all()
    with torch.no_grad():
        flat = nxt.reshape(-1, 3)
        q = torch.min(*agent.policy.critic_target(flat, agent.policy.actor(flat))).reshape(reward.shape)
    spread = (reward + agent.gamma * (1 - ended.float()) * q).std(dim=0).numpy()
    np.testing.assert_allclose(own, 7.0 - 2.0 * spread, rtol=1e-5, atol=1e-5)
    assert spread.min() > 0 and buffer.last_penalty == pytest.approx(2.0 * spread.mean(), rel=1e-5)
    assert not np.isin(batch.rewards.numpy().ravel()[24:], [7.0]).any(), "logged rows are real: no penalty, no 7"
    # "auto" floors at min(0, r_min / (1 - gamma)): Pendulum's rewards are all negative.
    assert buffer.target_floor == pytest.approx(float(data.rewards.min()) / (1 - agent.gamma), rel=1e-6)
    # The penalty stops at the floor: r' = max(r - penalty, min(r, floor - gamma (1 - done) V'(s'))).
    floored = BellmanPenaltyBuffer(100, venv.observation_space, venv.action_space, device="cpu", dream=core,
                                   value_penalty=2.0, target_floor=0.0, logged=None, logged_fraction=0.0)
    floored.bind(agent)
    rows = batch._replace(**{f: getattr(batch, f)[:24] for f in batch._fields[:5]})
    rows = rows._replace(rewards=torch.linspace(-50.0, 50.0, 24).reshape(-1, 1).double())
    with torch.no_grad():
        ahead = agent.gamma * torch.min(*agent.policy.critic_target(rows.next_observations,
                                                                    agent.policy.actor(rows.next_observations)))
    expected = np.maximum(rows.rewards.numpy().ravel() - 2.0 * spread,
                          np.minimum(rows.rewards.numpy().ravel(), -ahead.numpy().ravel()))
    got = floored.agent_rows(rows).rewards.numpy().ravel()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    assert (got > rows.rewards.numpy().ravel() - 2.0 * spread + 1e-3).any(), "the floor binds on some rows"
    assert (got <= rows.rewards.numpy().ravel() + 1e-6).all(), "the floor never pays more than the reward"
    # Members that agree charge nothing: every member made a copy of the first.
    with torch.no_grad():
        for tensor in core.model.state_dict().values():
            if tensor.dim() > 0 and tensor.shape[0] == core.model.num_members:
                tensor[:] = tensor[:1]
    core.model.load_state_dict(core.model.state_dict())  # drops the model's cached serving weights
    assert buffer.bellman_spread(batch.observations[:24], batch.actions[:24]).abs().max() < 1e-4
    with pytest.raises(ValueError, match="target_floor='auto' reads the smallest logged reward"):
        BellmanPenaltyBuffer(10, venv.observation_space, venv.action_space, dream=core, value_penalty=1.0,
                             logged=None, logged_fraction=0.0)
    with pytest.raises(ValueError, match="Box action space"):
        BellmanPenaltyBuffer(10, venv.observation_space, gym.spaces.Discrete(3), dream=core, value_penalty=1.0,
                             target_floor=None, logged=None, logged_fraction=0.0)
    with pytest.raises(ValueError, match="spread over the model's members.*has 1"):
        BellmanPenaltyBuffer(10, venv.observation_space, venv.action_space, dream={"checkpoint": pendulum[2]},
                             value_penalty=1.0, target_floor=None, logged=None, logged_fraction=0.0)


def test_one_step_targets_go_with_the_value_penalty(pendulum_members):
    from learned_envs.replay import BellmanPenaltyBuffer

    _, dream = pendulum_members
    register_dream("Test-Offline-ValueOneStep-v0", dream)
    agent = train_in_dream("Test-Offline-ValueOneStep-v0", 64, seed=0, progress=False, value_penalty=0.5, n_step=1)
    assert isinstance(agent.replay_buffer, BellmanPenaltyBuffer) and agent.replay_buffer.value_penalty == 0.5


def test_train_pays_a_value_penalty_on_request(pendulum_members, tmp_path, capsys):
    from learned_envs.cli import main
    from learned_envs.replay import BellmanPenaltyBuffer

    _, dream = pendulum_members
    register_dream("Test-Offline-Value-v0", dream)
    agent = train_in_dream("Test-Offline-Value-v0", 1200, seed=0, progress=False, value_penalty=0.5, temperature=0.5)
    buffer = agent.replay_buffer
    assert isinstance(buffer, BellmanPenaltyBuffer) and buffer.logged_fraction == 0.05  # the recipe's mix kept
    assert buffer.value_penalty == 0.5 and buffer.last_penalty > 0 and buffer.dream.temperature == 0.5
    with pytest.raises(ValueError, match="SAC, TD3 or DDPG, not PPO"):
        train_in_dream("Test-Offline-Value-v0", 64, "PPO", progress=False, value_penalty=1.0)
    out = tmp_path / "v.zip"
    assert main(["train", "Test-Offline-Value-v0", "--steps", "1100", "--value-penalty", "1", "--out", str(out)]) == 0
    from stable_baselines3.common.buffers import ReplayBuffer

    from learned_envs.data.collecting import load_sb3_agent

    loaded = load_sb3_agent(out)  # the agent alone: neither the dream nor the logged rows travel in the zip
    assert type(loaded.replay_buffer) is ReplayBuffer
    with zipfile.ZipFile(out) as saved:
        assert "replay_buffer_kwargs" not in saved.read("data").decode()
    with pytest.raises(SystemExit):
        main(["train", "Test-Offline-Value-v0", "--steps", "32", "--value-penalty", "-1", "--out", str(out)])
    assert "invalid finite number >= 0 value: '-1'" in capsys.readouterr().err


def test_medium_preset_stores_the_halt_and_trains_from_the_anchored_clone(pendulum, tmp_path, monkeypatch):
    _, path, _ = pendulum
    dream = fit(path, tmp_path / "medium.safetensors", source_env="Pendulum-v1", config=FitConfig(**TINY_FIT),
                preset="offline-medium", reset_states=300, progress=False)
    meta = read_metadata(dream)
    assert meta["training"] == {"preset": "offline-medium", "algo": "SAC", "steps": 600_000}
    assert meta["dream"]["halt_threshold"] == "auto" and meta["dream"]["halt_quantile"] == 0.99
    assert meta["dream"]["reset_from"] == "logged" and meta["dream"]["start_share"] == 0.5
    stored = presets.get_preset("offline-medium").training.behaviour_start
    assert stored == {"clone_steps": 20_000, "hold_steps": 50_000, "anchor": 1.0, "anchor_beta": 0.0}
    # The recipe's own start, made short enough for a test: the actor is cloned, then held.
    short = dataclasses.replace(presets.PRESETS["offline-medium"].training, behaviour_start={**stored, "clone_steps": 50})
    monkeypatch.setitem(presets.PRESETS, "offline-medium", dataclasses.replace(presets.PRESETS["offline-medium"], training=short))
    register_dream("Test-Offline-Medium-v0", dream)
    agent = train_in_dream("Test-Offline-Medium-v0", 64, seed=0, progress=False)
    assert not agent.actor.latent_pi[0].weight.requires_grad, "held after the clone"
    assert isinstance(agent.replay_buffer, MixedReplayBuffer)
    free = train_in_dream("Test-Offline-Medium-v0", 64, seed=0, progress=False, behaviour_start={"clone_steps": 0})
    assert free.actor.latent_pi[0].weight.requires_grad, "clone_steps=0 turns the recipe's start off"


def test_replay_preset_is_the_medium_one_without_the_halt(pendulum, tmp_path):
    _, path, _ = pendulum
    dream = fit(path, tmp_path / "replay.safetensors", source_env="Pendulum-v1", config=FitConfig(**TINY_FIT),
                preset="offline-replay", reset_states=300, progress=False)
    meta = read_metadata(dream)
    assert meta["training"] == {"preset": "offline-replay", "algo": "SAC", "steps": 600_000}
    assert meta["dream"]["halt_threshold"] is None
    assert meta["dream"]["reset_from"] == "logged" and meta["dream"]["uncertainty_penalty"] == 0.5
    register_dream("Test-Offline-Replay-v0", dream)
    assert gym.make("Test-Offline-Replay-v0").unwrapped.core.halt_threshold is None
    medium, replay = presets.get_preset("offline-medium"), presets.get_preset("offline-replay")
    assert replay.max_episode_steps == medium.max_episode_steps == 5
    # The same SAC and start, but the replay row keeps the advantage weights it was measured with.
    assert replay.training.behaviour_start == {**medium.training.behaviour_start, "anchor_beta": 3.0}
    assert dataclasses.replace(replay.training, behaviour_start=medium.training.behaviour_start) == medium.training


def test_select_judge_whole_plays_the_real_envs_episodes(pendulum, tmp_path, monkeypatch, capsys):
    """``train --select-every N --select-judge whole``: each check plays whole episodes from the logged
    episode starts, to the source env's time limit, unpenalised and never halted, where the recipe
    trains in 5-step penalised branches from any logged state with a halt."""
    import stable_baselines3.common.evaluation as evaluation

    from learned_envs.cli import main
    from learned_envs.training import whole_episode_judge

    data, path, _ = pendulum
    dream = fit(path, tmp_path / "medium.safetensors", source_env="Pendulum-v1", config=FitConfig(**TINY_FIT),
                preset="offline-medium", reset_states=300, progress=False)
    register_dream("Test-Offline-Judge-v0", dream)
    assert whole_episode_judge("Test-Offline-Judge-v0") == {
        "reset_from": "starts", "max_episode_steps": 200, "uncertainty_penalty": 0.0, "halt_threshold": None,
        "support_halt": None}
    played = {"lengths": [], "starts": [], "penalties": [], "halted": []}
    original = evaluation.evaluate_policy

    def recording(model, venv, n_eval_episodes, deterministic):
        def each_step(local, _):  # called per dream and step, with that dream's index as `i`
            if local["current_lengths"][local["i"]] == 1:
                played["starts"].append(local["observations"][local["i"]])
            played["penalties"].append(local["info"]["penalty"])
            played["halted"].append(local["info"]["halted"])

        rewards, lengths = original(model, venv, n_eval_episodes=n_eval_episodes, deterministic=deterministic,
                                    callback=each_step, return_episode_rewards=True)
        played["lengths"] += lengths
        return float(np.mean(rewards)), float(np.std(rewards))

    monkeypatch.setattr(evaluation, "evaluate_policy", recording)
    out = tmp_path / "agent.zip"
    assert main(["train", "Test-Offline-Judge-v0", "--steps", "64", "--clone-behaviour", "0", "--select-every", "32",
                 "--select-judge", "whole", "--out", str(out)]) == 0
    assert "--select-every: kept the policy of step" in capsys.readouterr().out and out.exists()
    assert played["lengths"] == [200] * 20, "two checks of 10 whole Pendulum episodes"
    starts = data.episode_starts().astype(np.float32)
    assert len(played["starts"]) == 20
    assert all(np.isclose(starts, obs, atol=1e-6).all(axis=1).any() for obs in played["starts"])
    assert len(played["penalties"]) == 20 * 200 and not any(played["penalties"]) and not any(played["halted"])
    # The judge's mode is an option of the checks: alone it is refused, as on a real env.
    assert main(["train", "Test-Offline-Judge-v0", "--steps", "64", "--select-judge", "whole", "--out", str(out)]) == 2
    assert "give --select-every STEPS too" in capsys.readouterr().err
    assert main(["train", "Pendulum-v1", "--steps", "8", "--select-judge", "whole", "--out", str(out)]) == 2
    assert "are for dreams; Pendulum-v1 is not a registered dream" in capsys.readouterr().err
