"""An agent's linear layers through oneDNN (learned_envs.fast_linear): the same layer, faster where chosen."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn

from learned_envs import fast_linear
from learned_envs.models import array_ops

pytestmark = pytest.mark.skipif(array_ops.onednn_linear_op() is None, reason="this torch build has no oneDNN linear")


@pytest.fixture
def onednn_on(monkeypatch):
    """oneDNN chosen whatever CPU runs the test, with every call counted."""
    op, calls = array_ops.onednn_linear_op(), []

    def counted(*args):
        calls.append(args[0].shape)
        return op(*args)

    monkeypatch.setattr(array_ops, "ONEDNN_LINEAR", counted)
    return calls


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(300, 96), (3, 100, 96)])
def test_the_layer_and_its_gradients_match_nn_linear(onednn_on, bias, shape):
    torch.manual_seed(0)
    plain = nn.Linear(96, 128, bias=bias)
    fast = nn.Linear(96, 128, bias=bias)
    fast.load_state_dict(plain.state_dict())
    assert fast_linear.use_onednn(fast) == 1 and isinstance(fast, fast_linear.OneDNNLinear)
    x = torch.randn(*shape, requires_grad=True)
    x_fast = x.detach().clone().requires_grad_()
    grad = torch.randn(*shape[:-1], 128)
    ours, theirs = fast(x_fast), plain(x)
    assert len(onednn_on) == 1  # 300 x 96 x 128 multiply-adds: worth it
    ours.backward(grad)
    theirs.backward(grad)
    assert len(onednn_on) == 3  # and both gradient products
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_fast.grad, x.grad, rtol=1e-5, atol=1e-5)
    for p_fast, p_plain in zip(fast.parameters(), plain.parameters()):
        torch.testing.assert_close(p_fast.grad, p_plain.grad, rtol=1e-4, atol=1e-4)


def test_small_products_stay_with_f_linear(onednn_on):
    layer = nn.Linear(64, 64)
    fast_linear.use_onednn(layer)
    rows = array_ops.ONEDNN_MIN_MACS // (64 * 64)  # one row short of the threshold
    layer(torch.randn(rows, 64))
    assert onednn_on == []
    layer(torch.randn(rows + 1, 64))
    assert len(onednn_on) == 1
    layer.double()(torch.randn(rows + 1, 64, dtype=torch.float64))  # float64: not oneDNN's
    assert len(onednn_on) == 1


def test_nothing_is_turned_where_the_cpu_rule_keeps_mkl(monkeypatch):
    monkeypatch.setattr(array_ops, "ONEDNN_LINEAR", None)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert fast_linear.use_onednn(net) == 0
    assert all(type(m) is not fast_linear.OneDNNLinear for m in net.modules())


def test_an_sb3_agent_trains_with_its_layers_turned_and_saves_as_plain_sb3(onednn_on, tmp_path):
    from stable_baselines3 import SAC

    env = gym.make("Pendulum-v1")
    agent = SAC("MlpPolicy", env, learning_starts=64, batch_size=64, buffer_size=1000, seed=0, device="cpu",
                policy_kwargs={"net_arch": [256, 256]})
    keys = list(agent.policy.state_dict())
    # actor: 2 hidden + mean + log_std; each of two critics and two targets: 3
    assert fast_linear.use_onednn(agent.policy) == 4 + 4 * 3
    assert list(agent.policy.state_dict()) == keys
    agent.learn(100)
    assert len(onednn_on) > 0  # the 64 x 256 x 256 updates went through oneDNN
    agent.save(tmp_path / "agent.zip")
    loaded = SAC.load(tmp_path / "agent.zip", device="cpu")
    assert all(type(m) is not fast_linear.OneDNNLinear for m in loaded.policy.modules())
    obs = env.observation_space.sample()
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0], rtol=1e-6)
