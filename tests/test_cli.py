"""The command line, run as a user runs it: a subprocess, on data the test makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def run(*args, home: Path, check: bool = True):
    env = {**os.environ, "LEARNED_ENVS_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "learned_envs.cli", *args], capture_output=True, text=True, env=env)
    if check:
        assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_collect_fit_list_make(tmp_path):
    home = tmp_path / "home"
    data = tmp_path / "cp.npz"
    out = run("collect", "CartPole-v1", "--steps", "300", "--out", str(data), "--seed", "2", home=home)
    assert "wrote 300 transitions" in out.stdout
    assert "collect CartPole-v1" in out.stderr  # the progress bar
    out = run("fit", str(data), "--id", "Test-Cli-v0", "--seed", "1", "--hidden-size", "32", "--layers", "2",
              "--ensemble-size", "2", "--elites", "1", "--max-updates", "200", home=home)
    assert "registered as Test-Cli-v0" in out.stdout
    assert "fit dynamics" in out.stderr  # the progress bar
    assert (home / "dreams" / "Test-Cli-v0.safetensors").is_file()

    listed = json.loads(run("list", "--json", home=home).stdout)
    row = next(r for r in listed if r["id"] == "Test-Cli-v0")
    assert row["origin"] == "user" and row["source_env_id"] == "CartPole-v1" and row["transitions"] == 300
    assert any(r["id"] == "Dream-CartPole-v0" and r["origin"] == "shipped" for r in listed)
    table = run("list", home=home).stdout
    assert "Test-Cli-v0" in table and "CartPole-v1" in table

    code = "import gymnasium as gym, learned_envs; e = gym.make('Test-Cli-v0'); print(e.reset(seed=0)[0].shape)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "LEARNED_ENVS_HOME": str(home)})
    assert shown.stdout.strip() == "(4,)", shown.stderr


def test_collect_pink_noise_actions_stay_in_the_space_and_move_together(tmp_path):
    from learned_envs.data import load

    data = tmp_path / "pink.npz"
    run("collect", "MountainCarContinuous-v0", "--steps", "2000", "--policy", "pink", "--seed", "3", "--out", str(data), home=tmp_path)
    logged = load(data)
    assert logged.metadata["behaviour_policy"] == {"kind": "pink", "exponent": 1.0}
    actions = logged.actions[:, 0]
    assert actions.min() >= -1.0 and actions.max() <= 1.0 and actions.std() > 0.3
    # Correlated in time (uniform random actions: lag-1 correlation ~0), and so the car travels
    # further than uniform actions take it in the same steps.
    assert np.corrcoef(actions[:-1], actions[1:])[0, 1] > 0.4
    uniform = tmp_path / "uniform.npz"
    run("collect", "MountainCarContinuous-v0", "--steps", "2000", "--seed", "3", "--out", str(uniform), home=tmp_path)
    assert np.ptp(logged.observations[:, 0]) > np.ptp(load(uniform).observations[:, 0])
    refused = run("collect", "CartPole-v1", "--steps", "10", "--policy", "pink", "--out", str(tmp_path / "x.npz"),
                  home=tmp_path, check=False)
    assert refused.returncode != 0 and "Box action space" in refused.stderr and not (tmp_path / "x.npz").exists()


def test_collect_with_sb3_agent_and_epsilon(tmp_path):
    from stable_baselines3 import PPO

    agent = PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, seed=0)
    agent.save(tmp_path / "agent.zip")
    data = tmp_path / "agent.npz"
    run("collect", "CartPole-v1", "--steps", "100", "--out", str(data), "--policy", str(tmp_path / "agent.zip"), "--epsilon", "0.25",
        home=tmp_path)
    from learned_envs.data import load

    meta = load(data).metadata["behaviour_policy"]
    assert meta["kind"] == "sb3" and meta["algo"] == "PPO" and meta["epsilon"] == 0.25


def test_collect_samples_an_agents_policy_on_request_seeded(tmp_path):
    """`collect --stochastic` (D4RL's medium protocol): the agent's sampled actions, the same for
    the same seed, recorded as such; the deterministic default and the caller's torch RNG untouched."""
    import torch
    from stable_baselines3 import SAC

    from learned_envs.data import load
    from learned_envs.data.collecting import collect

    agent = SAC("MlpPolicy", "Pendulum-v1", seed=0, device="cpu")
    agent.save(tmp_path / "sac.zip")
    policy = str(tmp_path / "sac.zip")
    run("collect", "Pendulum-v1", "--steps", "50", "--out", str(tmp_path / "s.npz"), "--policy", policy, "--stochastic",
        "--seed", "4", home=tmp_path)
    cli_data = load(tmp_path / "s.npz")
    assert cli_data.metadata["behaviour_policy"]["stochastic"] is True
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    again = collect("Pendulum-v1", 50, policy=policy, stochastic=True, seed=4, progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    np.testing.assert_array_equal(again.actions, cli_data.actions)
    other = collect("Pendulum-v1", 50, policy=policy, stochastic=True, seed=5, progress=False)
    fixed = collect("Pendulum-v1", 50, policy=policy, seed=4, progress=False)
    assert not np.array_equal(other.actions, again.actions) and not np.array_equal(fixed.actions, again.actions)
    assert fixed.metadata["behaviour_policy"]["stochastic"] is False
    # The agent's own deterministic action is what the default logs.
    np.testing.assert_allclose(fixed.actions, agent.predict(fixed.observations, deterministic=True)[0], atol=1e-6)
    with pytest.raises(ValueError, match="stochastic sampling is for an SB3 agent's policy, not policy='random'"):
        collect("Pendulum-v1", 5, stochastic=True, progress=False)


def test_fit_bad_data_exits_with_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, observations=np.zeros((3, 4)), actions=np.zeros(3))
    out = run("fit", str(bad), "--out", str(tmp_path / "x.safetensors"), home=tmp_path, check=False)
    assert out.returncode == 2
    assert "bad.npz" in out.stderr and "'rewards'" in out.stderr and "missing" in out.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_fit_needs_an_output(tmp_path):
    out = run("fit", str(tmp_path / "whatever.npz"), home=tmp_path, check=False)
    assert out.returncode != 0 and "--out" in out.stderr


def test_merge_keeps_episodes_and_records_each_policy(tmp_path):
    """Two logs whose boundary rows do not chain: merging must not glue their episodes together."""
    home = tmp_path / "home"
    a, b, merged = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "m.hdf5"
    run("collect", "CartPole-v1", "--steps", "150", "--out", str(a), "--seed", "1", home=home)
    run("collect", "CartPole-v1", "--steps", "100", "--out", str(b), "--seed", "2", home=home)
    out = run("merge", str(a), str(b), "--out", str(merged), home=home)
    assert "wrote 250 transitions" in out.stdout

    from learned_envs.data import load

    parts, whole = [load(a), load(b)], load(merged)
    assert len(whole) == 250 and whole.num_episodes == parts[0].num_episodes + parts[1].num_episodes
    np.testing.assert_array_equal(whole.observations, np.concatenate([p.observations for p in parts]))
    policy = whole.metadata["behaviour_policy"]
    assert policy["kind"] == "mixture"
    assert [(p["label"], p["transitions"], p["collect_seed"]) for p in policy["parts"]] == [("a.npz", 150, 1), ("b.npz", 100, 2)]

    other = tmp_path / "pendulum.npz"
    run("collect", "Pendulum-v1", "--steps", "50", "--out", str(other), home=home)
    failed = run("merge", str(a), str(other), "--out", str(tmp_path / "bad.npz"), home=home, check=False)
    assert failed.returncode == 2 and "observation_space" in failed.stderr and "part 1" in failed.stderr
    assert not (tmp_path / "bad.npz").exists()


def test_train_saves_an_agent_from_a_dream_or_a_real_env(tmp_path, small_checkpoint):
    from stable_baselines3 import PPO

    home = tmp_path / "home"
    (home / "dreams").mkdir(parents=True)
    (home / "dreams" / "Test-Train-v0.safetensors").write_bytes(Path(small_checkpoint).read_bytes())
    for env_id, extra in (("Test-Train-v0", ["--dream-kwarg", "temperature=0.5"]), ("CartPole-v1", [])):
        agent = tmp_path / f"{env_id}.zip"
        out = run("train", env_id, "--algo", "PPO", "--steps", "256", "--out", str(agent), *extra, home=home)
        assert f"in {env_id}" in out.stdout
        assert PPO.load(agent, device="cpu").num_timesteps >= 256
    failed = run("train", "CartPole-v1", "--steps", "10", "--out", str(tmp_path / "x.zip"),
                 "--dream-kwarg", "temperature=0", home=home, check=False)
    assert failed.returncode == 2 and "not a registered dream" in failed.stderr
    # --select-every checks the policy in the dream and says which one it kept; it judges dreams only.
    out = run("train", "Test-Train-v0", "--algo", "PPO", "--steps", "512", "--select-every", "256",
              "--out", str(tmp_path / "kept.zip"), home=home)
    assert "--select-every: kept the policy of step" in out.stdout and "2 checks" in out.stdout, out.stdout
    failed = run("train", "CartPole-v1", "--steps", "10", "--select-every", "5", "--out", str(tmp_path / "y.zip"),
                 home=home, check=False)
    assert failed.returncode == 2 and "--select-every" in failed.stderr and "not a registered dream" in failed.stderr


# -- the rough edges of issue 12: every usage error is one line naming the flag, exit 2 ---------
def _main(capsys, *argv) -> tuple[int, str, str]:
    from learned_envs.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own usage errors and --help/--version
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_misspelt_dream_kwarg_blames_dream_kwarg(capsys, small_dream_id, tmp_path):
    code, _, err = _main(capsys, "train", small_dream_id, "--steps", "8", "--out", str(tmp_path / "a.zip"),
                         "--dream-kwarg", "temprature=0.5")
    assert code == 2 and err.startswith("learned-envs train: error: --dream-kwarg 'temprature=0.5': unknown dream knob"), err
    assert "--sweep" not in err and not (tmp_path / "a.zip").exists()


def test_sac_in_a_discrete_dream_says_it_needs_a_box_action_space(capsys, small_dream_id, tmp_path):
    code, _, err = _main(capsys, "train", small_dream_id, "--algo", "sac", "--steps", "8", "--out", str(tmp_path / "a.zip"))
    assert code == 2 and "error: --algo SAC needs a continuous (Box) action space" in err and "Discrete(2)" in err, err
    assert "Traceback" not in err


def test_fit_without_a_target_is_a_usage_error(capsys, tmp_path):
    code, _, err = _main(capsys, "fit", str(tmp_path / "logs.npz"))
    assert code == 2 and err.strip() == "learned-envs fit: error: give --out FILE, --id DREAM_ID, or both", err


def test_version_and_help(capsys):
    from learned_envs.cli import build_parser
    from learned_envs.version import __version__

    code, out, _ = _main(capsys, "--version")
    assert code == 0 and out.strip() == f"learned-envs {__version__}"
    code, out, _ = _main(capsys, "--help")
    assert code == 0 and "``" not in out and "world models fitted on logged data" in out
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    undocumented = [f"{name} {action.option_strings or action.dest}" for name, sub in commands.items() if name != "fit"
                    for action in sub._actions if action.help is None]
    assert not undocumented, undocumented
    assert ".npz" not in commands["evaluate"]._option_string_actions["--data"].help
    for name, sub in commands.items():  # argparse %-formats help text: a stray "5%" broke `fit --help` once
        assert sub.format_help().startswith(f"usage: learned-envs {name}")


@pytest.mark.parametrize("text, value", [("true", True), ("False", False), ("none", None), ("0.5", 0.5), ("clip", "clip")])
def test_knob_values_are_parsed(text, value):
    from learned_envs.cli import parse_sweep

    assert parse_sweep([f"uncertainty_info={text}"], "--dream-kwarg") == {"uncertainty_info": [value]}


def test_rendering_headless_prints_no_sdl_complaint(small_checkpoint):
    code = ("import learned_envs, numpy as np; from learned_envs.dreams.render import SourceRenderer; "
            "print(SourceRenderer('CartPole-v1').render(np.zeros(4)).shape)")
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "SDL_AUDIODRIVER", "SDL_VIDEODRIVER", "DISPLAY")}
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert shown.stdout.strip() == "(400, 600, 3)", shown.stderr
    assert "XDG_RUNTIME_DIR" not in shown.stderr, shown.stderr


def test_loop_with_its_defaults_spends_the_budget_and_leaves_its_files(tmp_path):
    from learned_envs.checkpoint import load_checkpoint
    from learned_envs.data import load

    out = tmp_path / "loop"
    printed = run("loop", "CartPole-v1", "--agent", "PPO", "--real-steps", "300", "--initial-steps", "100", "--iterations", "1",
                  "--agent-steps", "256", "--eval-episodes", "1", "--dream-check-episodes", "0", "--out", str(out), home=tmp_path)
    assert "CartPole-v1: real return" in printed.stdout and "after 300 real steps" in printed.stdout
    assert "loop CartPole-v1" in printed.stderr  # the progress bar
    for name in ("real.npz", "agent.zip", "dream.safetensors", "curve.json", "curve.png"):
        assert (out / name).stat().st_size > 0
    real = load(out / "real.npz")
    assert len(real) == 300

    def leaves(policy):
        return [leaf for part in policy["parts"] for leaf in leaves(part)] if policy["kind"] == "mixture" else [policy]

    # Discrete actions: white noise. 100 random steps, then the round: half random (the explorer), half the agent's.
    parts = leaves(real.metadata["behaviour_policy"])
    assert [(p["kind"], p["transitions"]) for p in parts] == [("random", 100), ("random", 100), ("sb3", 100)]
    assert "noise" not in parts[2]
    dream = load_checkpoint(out / "dream.safetensors").metadata["dream"]
    assert dream["reset_from"] == "logged" and dream["out_of_bounds"] == "halt"  # CartPole's rewards are never negative


def test_train_stops_at_a_return_as_d4rls_medium_policy_does(tmp_path):
    from learned_envs.data import load

    agent, replay = tmp_path / "medium.zip", tmp_path / "replay.pkl"
    # Pendulum's return is above -2,000 from the start: the first check, at 300 steps, stops it.
    out = run("train", "Pendulum-v1", "--algo", "SAC", "--steps", "5000", "--stop-at-return", "-2000", "--check-every", "300",
              "--out", str(agent), "--save-replay-buffer", str(replay), home=tmp_path)
    assert "--stop-at-return: stopped at 300 steps, mean return" in out.stdout
    assert "trained 300 steps" in out.stdout
    # No checking episode is training data; SB3 does not store the step on which a callback stops training.
    assert len(load(replay)) == 299
    # A return it cannot reach in the budget: it trains the whole budget and says so.
    out = run("train", "Pendulum-v1", "--algo", "SAC", "--steps", "400", "--stop-at-return", "0", "--check-every", "200",
              "--out", str(agent), home=tmp_path)
    assert "never reached 0 (last check: -" in out.stdout and "trained 400 steps" in out.stdout
    assert "check at 200 steps: mean return -" in out.stdout and "check at 400 steps: mean return -" in out.stdout
    refused = run("train", "Dream-Pendulum-v0", "--steps", "100", "--stop-at-return", "0", "--out", str(agent), home=tmp_path, check=False)
    assert refused.returncode != 0 and "--stop-at-return is for training in a real env" in refused.stderr
