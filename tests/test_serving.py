"""The two serving paths of the ensemble (torch for batches, numpy for one CPU dream) are one
computation: given the same members and noise they agree to float32 rounding, in every knob."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learned_envs.checkpoint import load_checkpoint
from learned_envs.dreams.core import DreamCore
from learned_envs.models import array_ops
from learned_envs.models.array_ops import NumpyOps, TorchOps
from learned_envs.models.ensemble import EnsembleConfig, EnsembleWorldModel
from learned_envs.models.ensemble_serving import mlp
from tests._determinism import DETERMINISTIC

ATOL = 1e-5


@pytest.fixture(scope="module")
def ckpt(small_checkpoint):
    return load_checkpoint(small_checkpoint)


def box_model(seed: int = 0, obs_dim: int = 3) -> EnsembleWorldModel:
    """An untrained Box-action ensemble with data-like statistics (action 2, a head of 2 (D + 1)
    columns, narrow enough for the transposed product)."""
    torch.manual_seed(seed)
    model = EnsembleWorldModel(EnsembleConfig(obs_dim=obs_dim, action_dim=2, ensemble_size=4, hidden_size=32, num_layers=2)).eval()
    with torch.no_grad():
        for norm in (model.input_norm, model.target_norm):
            norm.mean.copy_(torch.randn_like(norm.mean))
            norm.std.copy_(torch.rand_like(norm.std) + 0.5)
        model.support_low.fill_(-2.0)
        model.support_high.fill_(2.0)
    return model


def inputs(model: EnsembleWorldModel, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = 2 * torch.randn(batch, model.config.obs_dim, generator=g)  # some rows beyond the support
    if model.config.discrete_actions:
        return state, torch.randint(model.config.action_dim, (batch,), generator=g)
    return state, torch.randn(batch, model.config.action_dim, generator=g)


def assert_same(torch_out, host_out) -> None:
    for field in ("next_state", "reward", "termination_prob", "disagreement", "model_std"):
        a, b = getattr(torch_out, field), getattr(host_out, field)
        assert (a is None) == (b is None), field
        if a is not None:
            assert isinstance(b, np.ndarray) and b.dtype == np.float32, field
            np.testing.assert_allclose(a.numpy(), b, atol=ATOL, rtol=1e-5, err_msg=field)


@pytest.mark.parametrize("which", ["cartpole", "box", "box-1d"])
@pytest.mark.parametrize("batch", [1, 7])
def test_host_path_equals_torch_path_for_every_member_and_the_mean(ckpt, which, batch):
    model = {"cartpole": ckpt.model, "box": box_model(), "box-1d": box_model(obs_dim=1)}[which]
    state, action = inputs(model, batch)
    for members in [*(torch.full((batch,), m) for m in range(model.num_members)), "mean"]:
        for uncertainty in (False, True):
            kwargs = {"temperature": 0.0, "uncertainty": uncertainty}
            host_members = members.numpy() if isinstance(members, torch.Tensor) else members
            assert_same(model.predict(state, action, members=members, **kwargs),
                        model.predict_host(state.numpy(), action.numpy(), members=host_members, **kwargs))


class SameDraws:
    """Fixed members, slots and noise, as tensors or arrays: both paths see the same draws."""

    def __init__(self, host: bool, seed: int = 3):
        self.host, self.rng = host, np.random.default_rng(seed)

    def _out(self, a: np.ndarray):
        return a if self.host else torch.as_tensor(a)

    def integers(self, high, size):
        return self._out(np.random.default_rng(1).integers(high, size=size))

    def integer(self, high):
        return int(self.integers(high, 1)[0])

    def permutation(self, n):
        return self._out(np.random.default_rng(2).permutation(n))

    def normal(self, like):
        return self._out(np.random.default_rng(4).standard_normal(tuple(like.shape)).astype(np.float32))

    def arange(self, n):
        return self._out(np.arange(n))


@pytest.mark.parametrize("which", ["cartpole", "box"])
@pytest.mark.parametrize("batch", [1, 9])
@pytest.mark.parametrize("uncertainty", [False, True])
def test_random_members_and_noise_agree_given_the_same_draws(ckpt, which, batch, uncertainty):
    """The sampling step (a random member per row through the slot grid, scaled noise) is one
    computation too: fed identical draws, the paths agree."""
    model = ckpt.model if which == "cartpole" else box_model()
    state, action = inputs(model, batch, seed=1)
    with torch.inference_mode():
        a = model.serving_weights().step(state, action, SameDraws(host=False), 0.7, None, uncertainty)
    b = model.serving_weights(host=True).step(state.numpy(), action.numpy(), SameDraws(host=True), 0.7, None, uncertainty)
    assert_same(a, b)


def test_host_weights_follow_training_and_member_selection():
    """The host path's cached views see in-place updates and are rebuilt when keep_members
    replaces the tensors."""
    model = box_model()
    state, action = inputs(model, 5)
    host = lambda: model.predict_host(state.numpy(), action.numpy(), temperature=0.0, members="mean")  # noqa: E731
    host()  # builds the cache
    with torch.no_grad():
        model.head.bias.add_(0.5)
        model.termination[0].weight.mul_(2.0)
    assert_same(model.predict(state, action, temperature=0.0, members="mean"), host())
    model.keep_members(torch.tensor([2, 0]))
    assert_same(model.predict(state, action, temperature=0.0, members="mean"), host())
    assert model.serving_weights(host=True).dynamics[0][0].shape[0] == 2


@pytest.mark.parametrize("obs_dim", [1, 3])
def test_training_still_backpropagates_through_the_shared_math(obs_dim):
    """Under autograd the in-place SiLU is off and the weights are gathered afresh: gradients
    reach every dynamics and termination parameter (a 1-D observation included, whose
    termination weights look like a batch of one to a careless shape test)."""
    model = box_model(obs_dim=obs_dim).train()
    state, action = inputs(model, 6)
    from learned_envs.models.base import Batch

    batch = Batch(obs=state, action=action, next_obs=state + 0.1, reward=torch.ones(6), terminated=torch.zeros(6))
    stacked = Batch(*(t.unsqueeze(0).expand(model.num_members, *t.shape) for t in
                      (batch.obs, batch.action, batch.next_obs, batch.reward, batch.terminated)))
    model.loss(stacked, "dynamics").sum().backward()
    model.loss(batch.index(torch.arange(6)[None]), "termination").sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_narrow_product_equals_the_plain_one():
    x, w, b = torch.randn(5, 37, 64), torch.randn(5, 64, 10), torch.randn(5, 1, 10)
    np.testing.assert_allclose(TorchOps.affine(x, w, b).numpy(), (x @ w + b).numpy(), atol=1e-5)
    np.testing.assert_allclose(NumpyOps.affine(x.numpy(), w.numpy(), b.numpy()), (x @ w + b).numpy(), atol=1e-5)


@pytest.mark.skipif(array_ops.onednn_linear_op() is None, reason="this torch build has no oneDNN linear")
@pytest.mark.parametrize("shared_rows", [False, True])
def test_large_member_products_through_onednn_equal_the_batched_gemm(monkeypatch, shared_rows):
    """Two hidden layers worth oneDNN, as member rows between them, then a narrow head: the
    batched GEMM's result (shared rows: ``[1, B, in]`` broadcast to every member, members="all").
    On whatever CPU runs the test: the path is switched on here, not by the CPU rule."""
    monkeypatch.setattr(array_ops, "ONEDNN_LINEAR", array_ops.onednn_linear_op())
    g = torch.Generator().manual_seed(0)
    rows = -(-array_ops.ONEDNN_MIN_MACS // (64 * 64))  # just worth it at 64 x 64
    x = torch.randn(1 if shared_rows else 3, rows, 64, generator=g)
    layers = [(torch.randn(3, 64, 64, generator=g) / 8, torch.randn(3, 1, 64, generator=g)) for _ in range(2)]
    layers.append((torch.randn(3, 64, 10, generator=g) / 8, torch.randn(3, 1, 10, generator=g)))
    with torch.inference_mode():
        hidden = TorchOps.affine(x, *layers[0])
        assert isinstance(hidden, list) and len(hidden) == 3  # member rows: oneDNN ran
        ours = mlp(x, layers, TorchOps)
        monkeypatch.setattr(array_ops, "ONEDNN_LINEAR", None)
        assert not isinstance(TorchOps.affine(x, *layers[0]), list)
        theirs = mlp(x, layers, TorchOps)
    assert ours.shape == theirs.shape == (3, rows, 10)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-4)


def test_onednn_is_never_asked_under_autograd_or_for_small_products(monkeypatch):
    monkeypatch.setattr(array_ops, "ONEDNN_LINEAR", array_ops.onednn_linear_op())
    w = torch.zeros(3, 64, 64)
    big = -(-array_ops.ONEDNN_MIN_MACS // 64)  # rows x in at the threshold
    with torch.no_grad():
        assert TorchOps.onednn_worth(big, w) == (array_ops.ONEDNN_LINEAR is not None)
        assert not TorchOps.onednn_worth(big - 64, w)
        assert not TorchOps.onednn_worth(big, w.double())
    assert not TorchOps.onednn_worth(big, w)  # autograd on (the default): fitting's products


ZEN5 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"


@pytest.mark.parametrize("cpuinfo, chosen", [
    (ZEN5, True),
    (ZEN5.replace("26", "25"), False),  # Zen 4: AVX-512 at half width, MKL's AVX2 path as fast
    (ZEN5.replace("AuthenticAMD", "GenuineIntel"), False),  # MKL at full rate on Intel
    ("", False),
])
def test_onednn_is_chosen_by_a_fixed_cpu_rule(monkeypatch, cpuinfo, chosen):
    monkeypatch.delenv("LEARNED_ENVS_ONEDNN", raising=False)
    assert array_ops.onednn_outruns_mkl(cpuinfo) is chosen
    monkeypatch.setenv("LEARNED_ENVS_ONEDNN", "0")
    assert array_ops.onednn_outruns_mkl(ZEN5) is False
    monkeypatch.setenv("LEARNED_ENVS_ONEDNN", "1")
    assert array_ops.onednn_outruns_mkl("") is True


def test_numpy_ops_match_torch_ops_at_the_extremes():
    x = torch.tensor([-1e4, -100.0, -20.0, -1.0, 0.0, 1e-3, 1.0, 20.0, 100.0, 1e4])
    for name in ("silu", "sigmoid", "softplus"):
        ours = getattr(NumpyOps, name)(x.numpy())
        theirs = getattr(TorchOps, name)(x.clone())
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-6, atol=1e-30, err_msg=name)


def test_a_single_cpu_dream_steps_on_the_host_and_matches_the_torch_path(ckpt):
    """One CPU dream takes the numpy path; forced onto torch, the same deterministic episode comes
    out (observations, rewards, flags and info) to float tolerance."""
    host, device = (DreamCore(ckpt, num_envs=1, max_episode_steps=30, **DETERMINISTIC) for _ in range(2))
    device.host = False
    assert host.host and not DreamCore(ckpt, num_envs=2).host
    rng = np.random.default_rng(0)
    for core in (host, device):
        core.seed(np.random.default_rng(0))
        core.reset_rows(initial_observations=np.zeros((1, 4), np.float32))
    for t in range(30):
        action = rng.integers(2, size=1)
        a, b = host.step(action), device.step(action)
        np.testing.assert_allclose(a.observations, b.observations, atol=ATOL, err_msg=f"step {t}")
        np.testing.assert_allclose(a.rewards, b.rewards, atol=ATOL, err_msg=f"step {t}")
        np.testing.assert_array_equal(a.terminated, b.terminated, err_msg=f"step {t}")
        np.testing.assert_array_equal(a.truncated, b.truncated, err_msg=f"step {t}")
        assert a.info.keys() == b.info.keys()
        for key in a.info:
            assert a.info[key].dtype == b.info[key].dtype, key
            np.testing.assert_allclose(a.info[key], b.info[key], atol=ATOL, err_msg=f"step {t} {key}")
        np.testing.assert_allclose(host.state.numpy(), device.state.numpy(), atol=ATOL)
        if a.terminated[0] or a.truncated[0]:
            for core in (host, device):
                core.reset_rows(initial_observations=np.zeros((1, 4), np.float32))


@pytest.mark.parametrize("settings", [
    {"propagation": "fixed", "temperature": 0.0, "uncertainty_penalty": 1.5},
    {"propagation": "mean", "temperature": 0.0, "uncertainty_penalty": 1.5, "penalty_of": "disagreement"},
    {"propagation": "random", "temperature": 0.0, "halt_threshold": 0.0, "halt_reward": -3.0},
    {"propagation": "mean", "temperature": 0.0, "uncertainty_info": True, "out_of_bounds": "clip"},
])
def test_knobs_mean_the_same_on_the_host_path(ckpt, settings):
    """MOPO's penalty, MOReL's halt and the uncertainty info come out of a single host dream as
    out of the torch path."""
    host, device = (DreamCore(ckpt, num_envs=1, **settings) for _ in range(2))
    device.host = False
    for core in (host, device):
        core.seed(np.random.default_rng(5))
        core.reset_rows(initial_observations=np.full((1, 4), 0.05, np.float32))
        core.members[:] = 1
    a, b = host.step(np.array([1])), device.step(np.array([1]))
    np.testing.assert_allclose(a.rewards, b.rewards, atol=ATOL)
    np.testing.assert_array_equal(a.terminated, b.terminated)
    for key in a.info:
        np.testing.assert_allclose(a.info[key], b.info[key], atol=ATOL, err_msg=key)
    if settings.get("uncertainty_penalty"):
        assert a.info["penalty"][0] > 0
    if settings.get("halt_threshold") is not None:
        assert a.info["halted"][0] and a.rewards[0] == -3.0
    if settings.get("uncertainty_info"):
        assert a.info["disagreement"][0] >= 0
