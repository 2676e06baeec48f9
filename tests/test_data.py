"""Transitions at the door: round trips, and every bad-dataset case named by file, field and row."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from learned_envs.data import DataError, load, save
from learned_envs.data.collecting import collect
from tests.helpers import TINY_FIT, good, write_raw_npz  # noqa: F401  (good is a fixture)


def test_collect_records_behaviour_and_episode_structure(good):
    assert len(good) == 120
    assert good.metadata["behaviour_policy"] == {"kind": "random"}
    assert good.metadata["source_env_id"] == "CartPole-v1"
    # Random CartPole episodes end by termination; the last row is cut by the step budget.
    assert good.truncations[-1] and good.terminations.sum() >= 3
    assert good.episode_starts().shape == (good.num_episodes, 4)


def test_npz_round_trip_is_exact(good, tmp_path):
    path = save(good, tmp_path / "d.npz")
    back = load(path)
    for name in ("observations", "actions", "rewards", "next_observations", "terminations", "truncations"):
        np.testing.assert_array_equal(getattr(back, name), getattr(good, name))
    assert back.observation_space == good.observation_space and back.action_space == good.action_space
    assert back.metadata["behaviour_policy"] == {"kind": "random"}


def _bad(good, tmp_path, **changes):
    path = write_raw_npz(tmp_path / "bad.npz", good, **changes)
    with pytest.raises(DataError) as err:
        load(path)
    return str(err.value)


def test_nan_names_file_field_row(good, tmp_path):
    obs = good.observations.copy()
    obs[17, 2] = np.nan
    msg = _bad(good, tmp_path, observations=obs)
    assert "bad.npz" in msg and "'observations'" in msg and "row 17" in msg and "NaN" in msg


def test_inf_reward(good, tmp_path):
    rew = good.rewards.copy()
    rew[5] = np.inf
    msg = _bad(good, tmp_path, rewards=rew)
    assert "'rewards'" in msg and "row 5" in msg


def test_wrong_shape(good, tmp_path):
    msg = _bad(good, tmp_path, next_observations=good.next_observations[:, :3])
    assert "'next_observations'" in msg and "shape" in msg


def test_wrong_dtype(good, tmp_path):
    msg = _bad(good, tmp_path, rewards=np.array(["x"] * len(good)))
    assert "'rewards'" in msg and "dtype" in msg


def test_empty(good, tmp_path):
    empty = {k: getattr(good, k)[:0] for k in ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")}
    msg = _bad(good, tmp_path, **empty)
    assert "empty" in msg


def test_missing_field(good, tmp_path):
    msg = _bad(good, tmp_path, terminations=None)
    assert "'terminations'" in msg and "missing" in msg


def test_discrete_action_outside_space(good, tmp_path):
    act = good.actions.copy()
    act[9] = 2
    msg = _bad(good, tmp_path, actions=act)
    assert "'actions'" in msg and "row 9" in msg and "outside" in msg


def test_box_action_outside_space(tmp_path):
    data = collect("Pendulum-v1", 30, seed=0, progress=False)
    act = data.actions.copy()
    act[4, 0] = 5.0  # Pendulum torques live in [-2, 2]
    msg = _bad(data, tmp_path, actions=act)
    assert "'actions'" in msg and "row 4" in msg and "outside" in msg


def test_next_observation_must_match_following_row(good, tmp_path):
    row = int(np.flatnonzero(~(good.terminations | good.truncations))[10])
    nxt = good.next_observations.copy()
    nxt[row] += 0.5
    msg = _bad(good, tmp_path, next_observations=nxt)
    assert "'next_observations'" in msg and f"row {row}" in msg and f"row {row + 1}" in msg


def test_non_boolean_flags(good, tmp_path):
    flags = good.terminations.astype(np.int64)
    flags[3] = 7
    msg = _bad(good, tmp_path, terminations=flags)
    assert "'terminations'" in msg and "row 3" in msg


def test_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_text("not a zip")
    with pytest.raises(DataError, match="junk.npz.*not a readable .npz"):
        load(path)


def test_spaces_inferred_and_said_so(good, tmp_path):
    path = write_raw_npz(tmp_path / "nospaces.npz", good, observation_space=None, action_space=None)
    data = load(path)
    assert data.action_space == gym.spaces.Discrete(2)
    assert set(data.metadata["spaces_inferred"]) == {"observation_space", "action_space"}


# --------------------------------------------------------------------------- fit, as data's consumer



def _without_source_env(data):
    import dataclasses

    return dataclasses.replace(data, metadata={k: v for k, v in data.metadata.items() if k != "source_env_id"})


def test_fit_records_an_absolute_data_path_and_says_what_it_inferred(good, tmp_path, monkeypatch, capsys):
    from learned_envs.checkpoint import read_metadata
    from learned_envs.fitting import FitConfig, fit

    save(_without_source_env(good), tmp_path / "d.npz")
    monkeypatch.chdir(tmp_path)
    meta = read_metadata(fit("d.npz", "m.safetensors", config=FitConfig(**TINY_FIT)))
    # `evaluate` without --data reopens this path, from whatever folder it runs in.
    assert meta["dataset"]["path"] == str((tmp_path / "d.npz").resolve())
    assert meta["source_env_id"] is None and meta["dream"]["max_episode_steps"] == 1000
    err = capsys.readouterr().err
    assert "no source env" in err and "time limit defaulted to 1000 steps" in err and "no renderer" in err
    fit("d.npz", "quiet.safetensors", config=FitConfig(**TINY_FIT), progress=False)
    assert "fit:" not in capsys.readouterr().err  # progress=False is silent


def test_fit_leaves_the_callers_global_torch_rng_alone(good, tmp_path):
    import torch
    from safetensors.numpy import load_file

    from learned_envs.fitting import FitConfig, fit

    outs = []
    for caller_seed in (7, 8):
        torch.manual_seed(caller_seed)
        expected = torch.rand(4)
        torch.manual_seed(caller_seed)
        outs.append(fit(good, tmp_path / f"m{caller_seed}.safetensors", seed=3, config=FitConfig(**TINY_FIT), progress=False))
        torch.testing.assert_close(torch.rand(4), expected)  # the caller's stream goes on as if fit never ran
    # ... while the fit itself depends only on its own seed.
    first, second = (load_file(str(path)) for path in outs)
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_colored_noise_has_unit_variance_and_its_power_falls_with_frequency_as_asked(exponent):
    from learned_envs.data.collecting import colored_noise

    noise = colored_noise(np.random.default_rng(0), 4096, 2, exponent)
    assert noise.shape == (4096, 2)
    np.testing.assert_allclose(noise.std(0), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(noise, colored_noise(np.random.default_rng(0), 4096, 2, exponent))  # seeded
    # The slope of log power against log frequency is -exponent (fitted over the whole spectrum).
    power = np.abs(np.fft.rfft(noise, axis=0)[1:]) ** 2
    freqs = np.fft.rfftfreq(4096)[1:]
    slope = np.polyfit(np.log(freqs), np.log(power.mean(1)), 1)[0]
    assert abs(slope + exponent) < 0.15, slope
