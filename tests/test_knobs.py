"""Each uncertainty knob changes what it says and nothing else (pinned on the batched core)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learned_envs.checkpoint import load_checkpoint
from learned_envs.dreams.core import DreamCore

N = 64
CENTRE = np.zeros((N, 4), np.float32)


@pytest.fixture(scope="module")
def ckpt(small_checkpoint):
    return load_checkpoint(small_checkpoint)


def _step(ckpt, seed=0, actions=None, start=CENTRE, **settings):
    core = DreamCore(ckpt, num_envs=N, **settings)
    core.seed(np.random.default_rng(seed))
    core.reset_rows(initial_observations=start)
    return core, core.step(np.arange(N) % 2 if actions is None else actions)


def test_temperature_scales_noise_linearly(ckpt):
    base = _step(ckpt, propagation="fixed", temperature=0.0)[1].observations
    one = _step(ckpt, propagation="fixed", temperature=1.0)[1].observations
    half = _step(ckpt, propagation="fixed", temperature=0.5)[1].observations
    assert not np.allclose(one, base)
    np.testing.assert_allclose(half - base, 0.5 * (one - base), atol=1e-5)


def test_temperature_scales_noise_linearly_with_random_members(ckpt):
    # Positive temperatures draw the same members and noise from the same seed: only the scale moves.
    half, one, two = (_step(ckpt, propagation="random", temperature=t)[1].observations for t in (0.5, 1.0, 2.0))
    assert not np.allclose(one, half)
    np.testing.assert_allclose(two - one, 2.0 * (one - half), atol=1e-5)


def test_temperature_zero_is_the_ensemble_mean_whatever_the_seed(ckpt):
    mean = _step(ckpt, seed=1, propagation="mean", temperature=0.0)[1]
    for seed in (1, 2):
        random = _step(ckpt, seed=seed, propagation="random", temperature=0.0)[1]
        np.testing.assert_array_equal(random.observations, mean.observations)
        np.testing.assert_array_equal(random.rewards, mean.rewards)


def test_temperature_zero_mean_is_deterministic_across_seeds(ckpt):
    a = _step(ckpt, seed=1, propagation="mean", temperature=0.0)[1]
    b = _step(ckpt, seed=2, propagation="mean", temperature=0.0)[1]
    np.testing.assert_array_equal(a.observations, b.observations)
    np.testing.assert_array_equal(a.rewards, b.rewards)


def test_propagation_mean_is_the_ensemble_average(ckpt):
    core, batch = _step(ckpt, propagation="mean", temperature=0.0)
    expected = ckpt.model.predict(torch.zeros(N, 4), torch.arange(N) % 2, temperature=0.0, members="mean")
    np.testing.assert_allclose(batch.observations, expected.next_state.numpy(), atol=1e-6)


def test_propagation_fixed_keeps_one_member_per_episode(ckpt):
    core, _ = _step(ckpt, propagation="fixed", temperature=0.0)
    members = core.members.clone()
    assert len(set(members.tolist())) > 1  # rows draw different members
    state = core.state.clone()
    batch = core.step(np.zeros(N, np.int64))
    expected = ckpt.model.predict(state, torch.zeros(N, dtype=torch.long), temperature=0.0, members=members)
    np.testing.assert_allclose(batch.observations, expected.next_state.numpy(), atol=1e-6)
    assert torch.equal(core.members, members)  # unchanged within the episode
    core.reset_rows()
    assert not torch.equal(core.members, members)  # redrawn at reset


def test_propagation_random_redraws_each_step(ckpt):
    core, _ = _step(ckpt, propagation="random", temperature=1e-4)  # near-zero noise: each row sits by its member
    state = core.state.clone()
    batch = core.step(np.zeros(N, np.int64))
    action = torch.zeros(N, dtype=torch.long)
    next_per_member = torch.stack([  # [E, N, D]: each member's mean next state
        ckpt.model.predict(state, action, temperature=0.0, members=torch.full((N,), e)).next_state for e in range(ckpt.model.num_members)])
    obs = torch.as_tensor(batch.observations)
    chosen = [(next_per_member[:, i] - obs[i]).abs().sum(-1).argmin().item() for i in range(N)]
    assert len(set(chosen)) > 1


def test_uncertainty_penalty_only_changes_reward(ckpt):
    plain = _step(ckpt, temperature=0.0, propagation="mean")[1]
    penal = _step(ckpt, temperature=0.0, propagation="mean", uncertainty_penalty=2.0)[1]
    np.testing.assert_array_equal(plain.observations, penal.observations)
    np.testing.assert_array_equal(plain.terminated, penal.terminated)
    assert (penal.info["penalty"] > 0).all() and (plain.info["penalty"] == 0).all()
    np.testing.assert_allclose(plain.rewards - penal.rewards, penal.info["penalty"], rtol=1e-5)
    std = ckpt.model.predict(torch.zeros(N, 4), torch.arange(N) % 2, temperature=0.0, uncertainty=True).model_std
    np.testing.assert_allclose(penal.info["penalty"], 2.0 * std.numpy(), rtol=1e-5)


def test_penalty_of_disagreement_charges_the_members_spread(ckpt):
    plain = _step(ckpt, temperature=0.0, propagation="mean")[1]
    penal = _step(ckpt, temperature=0.0, propagation="mean", uncertainty_penalty=2.0, penalty_of="disagreement")[1]
    np.testing.assert_array_equal(plain.observations, penal.observations)
    spread = penal.info["disagreement"]
    assert (spread > 0).all()
    np.testing.assert_allclose(penal.info["penalty"], 2.0 * spread, rtol=1e-5)
    np.testing.assert_allclose(plain.rewards - penal.rewards, penal.info["penalty"], rtol=1e-5)
    std = _step(ckpt, temperature=0.0, propagation="mean", uncertainty_penalty=2.0)[1].info["penalty"] / 2.0
    assert not np.allclose(spread, std)  # a different measure, not the model std renamed


def test_penalty_threshold_charges_only_the_measure_above_it(ckpt):
    linear = _step(ckpt, temperature=0.0, propagation="mean", uncertainty_penalty=2.0, penalty_of="disagreement")[1]
    spread = linear.info["disagreement"]
    level = float(np.median(spread))
    hinge = _step(ckpt, temperature=0.0, propagation="mean", uncertainty_penalty=2.0, penalty_of="disagreement",
                  penalty_threshold=level)[1]
    np.testing.assert_array_equal(linear.observations, hinge.observations)
    np.testing.assert_allclose(hinge.info["penalty"], 2.0 * np.maximum(spread - level, 0), rtol=1e-5, atol=1e-7)
    assert (hinge.info["penalty"][spread <= level] == 0).all() and (hinge.info["penalty"][spread > level] > 0).any()
    np.testing.assert_allclose(hinge.rewards - linear.rewards, linear.info["penalty"] - hinge.info["penalty"], rtol=1e-5, atol=1e-6)


def test_halt_threshold_terminates_with_halt_reward(ckpt):
    plain = _step(ckpt, temperature=0.0, propagation="mean")[1]
    halt = _step(ckpt, temperature=0.0, propagation="mean", halt_threshold=0.0, halt_reward=-7.0)[1]
    assert halt.info["halted"].all() and halt.terminated.all() and (halt.rewards == -7.0).all()
    np.testing.assert_array_equal(plain.observations, halt.observations)
    never = _step(ckpt, temperature=0.0, propagation="mean", halt_threshold=1e9)[1]
    np.testing.assert_array_equal(never.terminated, plain.terminated)
    assert not never.info["halted"].any()


def test_halt_reward_replaces_the_penalised_reward_only_where_the_halt_fires(ckpt):
    penal = _step(ckpt, temperature=0.0, propagation="mean", uncertainty_penalty=2.0)[1]
    halt = _step(ckpt, temperature=0.0, propagation="mean", uncertainty_penalty=2.0, halt_threshold=0.0, halt_reward=-7.0)[1]
    assert (halt.rewards == -7.0).all() and (halt.info["penalty"] == 0).all()  # the penalty reported is the one applied
    assert (penal.info["penalty"] > 0).all()


def test_halt_reward_leaves_out_of_bounds_ends_alone(ckpt):
    edge = np.tile(ckpt.obs_high.numpy(), (N, 1))
    plain = _step(ckpt, start=edge, temperature=0.0, propagation="mean", bounds_margin=0.0)[1]
    knob = _step(ckpt, start=edge, temperature=0.0, propagation="mean", bounds_margin=0.0, halt_reward=-7.0)[1]
    assert knob.info["left_bounds"].all() and not knob.info["halted"].any()
    np.testing.assert_array_equal(knob.rewards, plain.rewards)


def test_none_override_switches_off_a_stored_halt(ckpt):
    import dataclasses

    dream = {**ckpt.metadata["dream"], "halt_threshold": 0.0, "halt_reward": -7.0}
    stored = dataclasses.replace(ckpt, metadata={**ckpt.metadata, "dream": dream})
    assert DreamCore(stored).halt_threshold == 0.0
    core = DreamCore(stored, halt_threshold=None, halt_reward=None)
    assert core.halt_threshold is None and core.settings.halt_reward is None


def test_halt_threshold_auto_uses_recorded_disagreement(ckpt):
    recorded = ckpt.metadata["fit"]["metrics"]["max_train_disagreement"]
    core = DreamCore(ckpt, num_envs=1, halt_threshold="auto", halt_factor=3.0)
    assert recorded > 0 and core.halt_threshold == pytest.approx(3.0 * recorded)


def test_out_of_bounds_halt_versus_clip(ckpt):
    edge = np.tile(ckpt.obs_high.numpy(), (N, 1))  # every dimension at its observed maximum
    halt = _step(ckpt, start=edge, temperature=0.0, propagation="mean", out_of_bounds="halt", bounds_margin=0.0)[1]
    clip = _step(ckpt, start=edge, temperature=0.0, propagation="mean", out_of_bounds="clip", bounds_margin=0.0)[1]
    np.testing.assert_array_equal(halt.observations, clip.observations)
    assert (halt.info["clipped_dims"] > 0).all()
    assert halt.info["left_bounds"].all() and halt.terminated.all() and not halt.info["halted"].any()
    assert not clip.info["left_bounds"].any()
    assert (halt.observations <= ckpt.obs_high.numpy()).all()


def test_bounds_margin_widens_the_support(ckpt):
    low, high = ckpt.obs_low.numpy(), ckpt.obs_high.numpy()
    # A fresh fit stores the default: twice the data's range on each side.
    assert ckpt.metadata["dream"]["bounds_margin"] == 2.0
    np.testing.assert_allclose(DreamCore(ckpt).obs_high.numpy(), np.minimum(high + 2 * (high - low), ckpt.observation_space.high),
                               rtol=1e-6)
    core = DreamCore(ckpt, bounds_margin=0.5)
    space = ckpt.observation_space
    np.testing.assert_allclose(core.obs_high.numpy(), np.minimum(high + 0.5 * (high - low), space.high), rtol=1e-6)
    np.testing.assert_allclose(core.obs_low.numpy(), np.maximum(low - 0.5 * (high - low), space.low), rtol=1e-6)
    # From the observed maximum, a step that stays inside the widened support does not halt.
    edge = np.tile(high, (N, 1))
    wide = _step(ckpt, start=edge, temperature=0.0, propagation="mean", bounds_margin=0.5)[1]
    tight = _step(ckpt, start=edge, temperature=0.0, propagation="mean", bounds_margin=0.0)[1]
    assert wide.info["clipped_dims"].sum() < tight.info["clipped_dims"].sum()


def test_bad_knob_values(ckpt):
    for bad in ({"temperature": -1}, {"temperature": None}, {"temperature": float("nan")}, {"propagation": "vote"},
                {"uncertainty_penalty": -0.1}, {"penalty_threshold": -1}, {"penalty_threshold": "sometimes"},
                {"penalty_threshold": "auto"}, {"penalty_quantile": 1.5}, {"halt_threshold": "sometimes"}, {"halt_threshold": -5},
                {"halt_factor": -1},
                {"halt_reward": "x"}, {"penalty_of": "std"}, {"start_share": -0.1}, {"start_share": 2}, {"halt_quantile": 1.01},
                {"out_of_bounds": "wrap"}, {"bounds_margin": -1}):
        (name,) = bad
        with pytest.raises(ValueError, match=name):
            DreamCore(ckpt, **bad)
