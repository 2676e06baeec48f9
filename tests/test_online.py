"""The online loop: real steps -> refit -> agent in the dream -> real score, resumable without losing or repeating real steps."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from learned_envs.checkpoint import load_checkpoint
from learned_envs.data import load
from learned_envs.online import LoopConfig, pessimistic_bounds, resolve_noise, run_loop

# Small enough for CI: what is tested is the bookkeeping, not how well the agent learns.
TINY = dict(env_id="Pendulum-v1", agent="SAC", real_steps=500, initial_steps=200, iterations=3, agent_steps_per_iteration=150,
            eval_episodes=1, fit_options={"max_updates": 60, "min_updates": 0, "eval_every": 20, "termination_max_updates": 20})
EXPLORING = {**TINY, "explorer": "disagreement"}  # an SB3 explorer trained in the dream


def test_loop_writes_every_artifact_and_spends_exactly_the_budget(tmp_path):
    result = run_loop(LoopConfig(**EXPLORING), tmp_path, progress=False)
    real = load(tmp_path / "real.npz")
    assert len(real) == 500
    steps = [p["real_steps"] for p in result["curve"]]
    assert steps == [200, 300, 400, 500]  # 200 random, then three slices of 100; scored after each
    assert all(np.isfinite(p["return"]) and p["eval_steps"] == 200 for p in result["curve"])
    dream = load_checkpoint(tmp_path / "dream.safetensors").metadata
    assert dream["fit"]["metrics"]["warm_start"]
    assert dream["dream"]["out_of_bounds"] == "clip"  # Pendulum's rewards are negative: a halt would pay
    assert dream["dream"]["reset_from"] == "logged"  # the loop's default: MBPO's branching from real states
    assert dream["dream"]["bounds_margin"] == 1.0  # where the loop's targets were met, not the knob's default
    for name in ("agent.zip", "learner.zip", "curve.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "curve.json").read_text())["curve"] == result["curve"]
    # Each training after the first is judged in the newest dream against the acting agent.
    assert result["curve"][0]["dream_check"] is None
    for point in result["curve"][2:]:
        check = point["dream_check"]
        assert check["kept"] in ("trained", "before") and np.isfinite([check["trained"], check["before"]]).all()
    kinds = json.dumps(real.metadata.get("parts") or real.metadata)
    assert '"kind": "pink"' in kinds and '"role": "agent"' in kinds and '"role": "explorer"' in kinds
    assert (tmp_path / "explorer.zip").stat().st_size > 0
    # Done is done: running it again spends nothing more.
    again = run_loop(LoopConfig(**EXPLORING), tmp_path, progress=False)
    assert again["curve"] == result["curve"] and len(load(tmp_path / "real.npz")) == 500


def test_the_dream_edge_is_the_worse_choice_for_the_logged_rewards():
    assert pessimistic_bounds(np.ones(10)) == "halt"  # ending forfeits what is left
    assert pessimistic_bounds(np.array([0.0, 2.0])) == "halt"
    assert pessimistic_bounds(np.array([-3.0, 100.0])) == "clip"  # ending would spare the agent the costs


def test_training_that_scores_worse_in_the_dream_does_not_act_but_the_learner_keeps_it(tmp_path, monkeypatch):
    import torch
    from stable_baselines3 import SAC

    import learned_envs.online as online

    seen = []

    def judge(agent, venv, seed):  # the trained learner is scored first, then the acting agent
        seen.append({k: v.clone() for k, v in agent.policy.state_dict().items()})
        return -100.0 if len(seen) % 2 else 0.0

    monkeypatch.setattr(online, "_dream_return", judge)
    result = run_loop(LoopConfig(**{**TINY, "real_steps": 300, "iterations": 1}), tmp_path, progress=False)
    assert result["curve"][-1]["dream_check"] == {"trained": -100.0, "before": 0.0, "kept": "before"}
    trained, acting = seen[-2], seen[-1]
    assert any(not torch.equal(trained[k], acting[k]) for k in acting)  # training did change the weights
    saved = SAC.load(tmp_path / "agent.zip", device="cpu").policy.state_dict()
    assert all(torch.equal(saved[k], acting[k]) for k in acting)  # the agent that acts and is scored
    learner = SAC.load(tmp_path / "learner.zip", device="cpu").policy.state_dict()
    assert all(torch.equal(learner[k], trained[k]) for k in trained)  # trains on from where it got to


def test_training_that_scores_as_well_in_the_dream_becomes_the_acting_agent(tmp_path, monkeypatch):
    import torch
    from stable_baselines3 import SAC

    import learned_envs.online as online

    monkeypatch.setattr(online, "_dream_return", lambda agent, venv, seed: 0.0)
    result = run_loop(LoopConfig(**{**TINY, "real_steps": 300, "iterations": 1}), tmp_path, progress=False)
    assert result["curve"][-1]["dream_check"] == {"trained": 0.0, "before": 0.0, "kept": "trained"}
    saved = SAC.load(tmp_path / "agent.zip", device="cpu").policy.state_dict()
    learner = SAC.load(tmp_path / "learner.zip", device="cpu").policy.state_dict()
    assert all(torch.equal(saved[k], learner[k]) for k in learner)


def test_the_explorer_is_rewarded_by_the_members_disagreement(tmp_path):
    from stable_baselines3 import SAC

    from learned_envs.online import NoveltyReward, _dream_venv, _relabel

    cfg = LoopConfig(**{**EXPLORING, "real_steps": 300, "iterations": 1}).resolved()
    run_loop(cfg, tmp_path, progress=False)
    venv = NoveltyReward(_dream_venv(cfg, tmp_path / "dream.safetensors", 3, uncertainty_info=True), scale=2.0)
    venv.reset()
    for _ in range(5):
        _, rewards, _, infos = venv.step(np.full((3, 1), 1.5, dtype=np.float32))
        assert np.allclose(rewards, [info["disagreement"] / 2.0 for info in infos]) and (rewards > 0).all()
    # Its replay buffer is relabelled with the newest dream, from the actions in the env's units.
    explorer = SAC.load(tmp_path / "explorer.zip", env=venv, device="cpu")
    explorer.learn(60)
    stored = explorer.replay_buffer.actions[:explorer.replay_buffer.pos].copy()  # SAC stores them scaled to [-1, 1]
    _relabel(explorer, lambda obs, action: action[:, 0])
    np.testing.assert_allclose(explorer.replay_buffer.rewards[:explorer.replay_buffer.pos], 2.0 * stored[..., 0], rtol=1e-6)


def test_the_random_steps_can_be_pink_noise_and_are_seeded():
    import gymnasium as gym

    from learned_envs.online import _collect

    env = gym.make("MountainCarContinuous-v0")
    first, again = (_collect(env, None, 300, seed=4, noise="pink") for _ in range(2))
    assert first.metadata["behaviour_policy"]["kind"] == "pink"
    np.testing.assert_array_equal(first.actions, again.actions)
    assert np.corrcoef(first.actions[:-1, 0], first.actions[1:, 0])[0, 1] > 0.4
    uniform = _collect(env, None, 300, seed=4)
    assert uniform.metadata["behaviour_policy"] == {"kind": "random"}
    assert abs(np.corrcoef(uniform.actions[:-1, 0], uniform.actions[1:, 0])[0, 1]) < 0.2
    with pytest.raises(ValueError, match="noise"):
        LoopConfig(**{**TINY, "noise": "brown"}).validate()
    # The default: pink where actions are a Box, white (uniform, the agent's own sampling) where they are discrete.
    assert LoopConfig(env_id="CartPole-v1").noise == "auto"
    assert resolve_noise("auto", env.action_space) == "pink" and resolve_noise("auto", gym.make("CartPole-v1").action_space) == "white"
    assert resolve_noise("white", env.action_space) == "white"


@pytest.mark.parametrize("algo", ["SAC", "SAC-gSDE", "TD3", "PPO"])
def test_pink_exploration_is_the_agents_own_distribution_driven_by_the_given_draw(algo):
    import gymnasium as gym
    import stable_baselines3 as sb3

    from learned_envs.online import _collect, pink_exploration

    env = gym.make("Pendulum-v1")
    options = {"use_sde": True} if algo == "SAC-gSDE" else {}  # rl-zoo's SAC for MountainCarContinuous uses gSDE
    agent = getattr(sb3, algo.split("-")[0])("MlpPolicy", env, seed=0, device="cpu", **options)
    obs = env.reset(seed=1)[0]
    # A zero draw is the agent's deterministic action.
    np.testing.assert_allclose(pink_exploration(agent, obs, np.zeros(1)), agent.predict(obs, deterministic=True)[0], rtol=1e-5)
    if algo == "SAC":
        mean, log_std, _ = agent.actor.get_action_dist_params(agent.policy.obs_to_tensor(obs)[0])
        expected = 2.0 * np.tanh(mean.detach().numpy()[0] + np.exp(log_std.detach().numpy()[0]) * 0.7)  # Pendulum's torque is in [-2, 2]
        np.testing.assert_allclose(pink_exploration(agent, obs, np.array([0.7])), expected, rtol=1e-5)
    run = _collect(env, agent, 200, seed=3, noise="pink")
    assert run.metadata["behaviour_policy"]["noise"] == "pink"
    assert (np.abs(run.actions) <= 2.0).all()
    with pytest.raises(ValueError, match="Box action space"):
        _collect(gym.make("CartPole-v1"), None, 10, seed=0, noise="pink")


def test_a_random_explorer_takes_its_share_of_every_round_and_trains_nothing(tmp_path):
    result = run_loop(LoopConfig(**{**EXPLORING, "explorer": "random", "noise": "pink"}), tmp_path, progress=False)
    real = load(tmp_path / "real.npz")
    assert len(real) == 500 and [p["real_steps"] for p in result["curve"]] == [200, 300, 400, 500]
    def leaves(policy):  # each append nests the data so far as the first part of a mixture
        return [leaf for part in policy["parts"] for leaf in leaves(part)] if policy["kind"] == "mixture" else [policy]

    parts = leaves(real.metadata["behaviour_policy"])
    # 200 pink random steps, then per round 50 pink random steps (the explorer's half) and 50 of the agent's.
    assert [p["kind"] for p in parts] == ["pink"] + ["pink", "sb3"] * 3
    assert all(p.get("noise") == "pink" for p in parts if p["kind"] == "sb3")
    assert not (tmp_path / "explorer.zip").exists()


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    run_loop(LoopConfig(**{**TINY, "real_steps": 200, "iterations": 1}), tmp_path, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        run_loop(LoopConfig(**{**TINY, "real_steps": 300}), tmp_path, progress=False)


def test_a_folder_from_before_a_knob_existed_resumes_with_the_value_it_ran_with(tmp_path):
    import dataclasses

    from learned_envs.online import LoopState

    # Written before stop 22: no noise or explorer knob, explore_fraction 0; it ran white noise and no explorer.
    before = LoopConfig(**{**TINY, "explore_fraction": 0.0, "noise": "white", "explorer": "disagreement"})
    saved = json.loads(json.dumps(dataclasses.asdict(before)))
    del saved["explorer_steps_per_iteration"], saved["noise"], saved["explorer"]
    (tmp_path / "state.json").write_text(json.dumps({"config": saved, "iteration": 2, "phase": "fitted", "real_steps": 300, "curve": []}))
    assert LoopState(tmp_path, before)["phase"] == "fitted"
    for today in (LoopConfig(**TINY), LoopConfig(**{**TINY, "explore_fraction": 0.0})):  # today's defaults are pink and random
        with pytest.raises(ValueError, match="other settings"):
            LoopState(tmp_path, today)


def test_killed_mid_iteration_resumes_without_losing_or_repeating_real_steps(tmp_path):
    script = f"from learned_envs.online import LoopConfig, run_loop; run_loop(LoopConfig(**{TINY!r}), {str(tmp_path)!r}, progress=False)"
    proc = subprocess.Popen([sys.executable, "-c", script])
    state = tmp_path / "state.json"
    deadline = time.time() + 240
    # Kill it once it has spent real steps beyond the random ones and is busy refitting or training.
    while time.time() < deadline:
        if state.exists():
            s = json.loads(state.read_text())
            if s["real_steps"] >= 300 and s["phase"] in ("collected", "fitted"):
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = load(tmp_path / "real.npz")
    spent = json.loads(state.read_text())["real_steps"]
    assert len(before) == spent >= 300
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = load(tmp_path / "real.npz")
    assert len(after) == 500
    np.testing.assert_array_equal(after.observations[:spent], before.observations)  # nothing lost or rewritten
    np.testing.assert_array_equal(after.actions[:spent], before.actions)
    assert [p["real_steps"] for p in json.loads((tmp_path / "curve.json").read_text())["curve"]] == [200, 300, 400, 500]
