"""BehaviourStart: an off-policy agent's actor starts as a clone of the logged behaviour and is held
while its critic learns, then trains as usual."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.callbacks import BaseCallback

from learned_envs.behaviour_start import BehaviourStart
from learned_envs.data.transitions import Transitions


def pendulum_log(rows: int = 2_000, noise: float = 0.0, seed: int = 0) -> Transitions:
    """Pendulum-v1 observations with a deterministic (or noisy) linear behaviour ``a = clip(2 * (-cos - 0.5 * sin))``."""
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1.0, 1.0, size=(rows, 3)).astype(np.float32)
    actions = np.clip(2.0 * (-obs[:, :1] - 0.5 * obs[:, 1:2]) + noise * rng.standard_normal((rows, 1)), -2.0, 2.0)
    zeros = np.zeros(rows, dtype=bool)
    return Transitions(observations=obs, actions=actions.astype(np.float32), rewards=np.zeros(rows, np.float32),
                       next_observations=obs, terminations=zeros, truncations=zeros,
                       observation_space=env.observation_space, action_space=env.action_space)


class ActorSnapshots(BaseCallback):
    """The actor's parameters at the given step counts."""

    def __init__(self, at: tuple[int, ...]):
        super().__init__()
        self.at, self.taken = at, {}

    def _on_step(self) -> bool:
        if self.num_timesteps in self.at:
            self.taken[self.num_timesteps] = [p.detach().clone() for p in self.model.actor.parameters()]
        return True


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_sac_actor_clones_the_behaviour_is_held_then_trains():
    log = pendulum_log()
    start = BehaviourStart(log, clone_steps=600, hold_steps=300, seed=0, progress=False)
    snapshots = ActorSnapshots(at=(150, 290, 400))
    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=100, seed=0, device="cpu")
    model.learn(400, callback=[start, snapshots])

    first, last = start.clone_loss
    assert last < 0.1 * first  # in [-1, 1] action units; the behaviour is a clipped linear map
    assert same(snapshots.taken[150], snapshots.taken[290]), "the actor moved while held"
    assert not same(snapshots.taken[290], snapshots.taken[400]), "the actor never trained after the hold"
    assert not start.held


def test_released_actor_learns_on_one_vector_step_in_actor_every():
    start = BehaviourStart(pendulum_log(), clone_steps=100, hold_steps=300, actor_every=3, seed=0, progress=False)
    snapshots = ActorSnapshots(at=tuple(range(290, 331)))
    SAC("MlpPolicy", "Pendulum-v1", learning_starts=100, seed=0, device="cpu").learn(330, callback=[start, snapshots])
    # A snapshot at step t is taken after the updates that followed step t - 1.
    moved = {t for t in range(290, 330) if not same(snapshots.taken[t], snapshots.taken[t + 1])}
    assert moved == {t for t in range(300, 330) if t % 3 == 0}
    with pytest.raises(ValueError, match="actor_every >= 1"):
        BehaviourStart(pendulum_log(), actor_every=0)


def test_sac_clone_acts_like_the_behaviour_and_keeps_a_floor_of_spread():
    log = pendulum_log()
    # A fixed entropy coefficient: no entropy target to meet, so the floor alone sets the spread.
    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=10_000, ent_coef=0.1, seed=0, device="cpu")
    start = BehaviourStart(log, clone_steps=800, hold_steps=1_000, min_std=0.2, seed=0, progress=False)
    model.learn(1, callback=start)  # the clone happens at training start; nothing trains before learning_starts

    test = pendulum_log(rows=500, seed=1)
    acted = model.predict(test.observations, deterministic=True)[0]
    assert np.abs(acted - test.actions).mean() < 0.25  # actions span [-2, 2]
    # A deterministic behaviour leaves no spread around the clone: the floor holds it.
    _, log_std, _ = model.actor.get_action_dist_params(torch.as_tensor(test.observations))
    assert torch.allclose(log_std, torch.full_like(log_std, np.log(0.2)), atol=1e-5)
    # A noisy behaviour's spread is kept (its noise is 0.5 in env units, 0.25 in the agent's [-1, 1] scale).
    noisy = BehaviourStart(pendulum_log(rows=4_000, noise=0.5), clone_steps=800, min_std=0.01, seed=0, progress=False)
    SAC("MlpPolicy", "Pendulum-v1", learning_starts=10_000, ent_coef=0.1, seed=0, device="cpu").learn(1, callback=noisy)
    spread = noisy.model.actor.log_std.bias.exp()
    assert 0.15 < float(spread) < 0.35


def test_sac_clone_of_a_saturated_behaviour_starts_at_the_entropy_target():
    # Near-bang-bang actions (every one at 95% of a bound): a clone of the data's tiny spread
    # would sit far below SAC's entropy target.
    log = pendulum_log()
    log.actions = np.where(log.actions >= 0, 1.9, -1.9).astype(np.float32)
    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=10_000, seed=0, device="cpu")
    start = BehaviourStart(log, clone_steps=800, min_std=0.01, seed=0, progress=False)
    model.learn(1, callback=start)
    with torch.no_grad():
        _, log_prob = model.actor.action_log_prob(torch.as_tensor(log.observations))
    assert abs(float(-log_prob.mean()) - model.target_entropy) < 0.1  # SB3's own sampling, not the fit's draws
    assert float(model.actor.log_std.bias.exp()) > 0.01


def test_td3_target_actor_starts_as_the_clone():
    model = TD3("MlpPolicy", "Pendulum-v1", learning_starts=10_000, seed=0, device="cpu")
    start = BehaviourStart(pendulum_log(), clone_steps=300, hold_steps=0, seed=0, progress=False)
    model.learn(1, callback=start)
    assert start.clone_loss[1] < start.clone_loss[0]
    assert same(list(model.actor.parameters()), list(model.actor_target.parameters()))
    assert not start.held  # hold_steps=0 releases it at once
    assert all(p.requires_grad for p in model.actor.parameters())


def test_bad_uses_are_named():
    with pytest.raises(ValueError, match="clone_steps >= 1"):
        BehaviourStart(pendulum_log(), clone_steps=0)
    discrete = pendulum_log()
    discrete.action_space = gym.spaces.Discrete(2)
    with pytest.raises(ValueError, match="Box action space"):
        BehaviourStart(discrete)
    with pytest.raises(ValueError, match="has none"):
        PPO("MlpPolicy", "Pendulum-v1", n_steps=64, device="cpu").learn(64, callback=BehaviourStart(pendulum_log(), progress=False))
    with pytest.raises(ValueError, match="does not match"):
        SAC("MlpPolicy", "MountainCarContinuous-v0", device="cpu").learn(1, callback=BehaviourStart(pendulum_log(), progress=False))


def test_anchor_keeps_the_released_actor_near_the_behaviour():
    log, test = pendulum_log(), pendulum_log(rows=500, seed=1)

    def drift(anchor: float) -> float:
        model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=100, seed=0, device="cpu")
        model.learn(900, callback=BehaviourStart(log, clone_steps=600, hold_steps=300, anchor=anchor, seed=0, progress=False))
        return float(np.abs(model.predict(test.observations, deterministic=True)[0] - test.actions).mean())

    anchored, free = drift(0.05), drift(0.0)
    assert anchored < 0.5 * free, (anchored, free)
    with pytest.raises(ValueError, match="anchor >= 0"):
        BehaviourStart(log, anchor=-1.0)


def test_anchor_beta_weights_each_logged_row_by_its_advantage(monkeypatch):
    """A = Q(s, a_logged) - Q(s, actor(s)) by the smaller critic; weights exp(beta A), at most 100."""
    import copy

    from learned_envs.behaviour_start import MAX_ROW_WEIGHT

    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=0, seed=0, device="cpu")
    start = BehaviourStart(pendulum_log(noise=0.5), clone_steps=50, hold_steps=0, anchor=2.5, anchor_beta=2.0, seed=0,
                           progress=False)
    model.learn(1, callback=start)
    monkeypatch.setattr(model, "critic", lambda obs, actions: (3.0 * actions[:, :1], 3.0 * actions[:, :1] + 1.0))
    draws = copy.deepcopy(start.rng)  # the rows the step will draw
    rows = torch.as_tensor(draws.integers(len(start._obs), size=start.batch_size))
    with torch.no_grad():
        acting = model.actor(start._obs[rows], deterministic=True)
    expected = torch.exp(2.0 * 3.0 * (start._actions[rows, 0] - acting[:, 0])).clamp(max=MAX_ROW_WEIGHT)
    start._anchor_step()
    assert start.row_weights == pytest.approx((float(expected.mean()), float(expected.max())), rel=1e-5)
    assert 0 < start.row_weights[0] < start.row_weights[1] <= MAX_ROW_WEIGHT
    with pytest.raises(ValueError, match="give an anchor too"):
        BehaviourStart(pendulum_log(), anchor_beta=3.0)
    with pytest.raises(ValueError, match="anchor_beta >= 0"):
        BehaviourStart(pendulum_log(), anchor=2.5, anchor_beta=-1.0)


def test_anchor_beta_shares_out_the_pull_without_changing_its_size(monkeypatch):
    """The row weights are divided by their batch mean: where every row has the same advantage,
    the anchor's gradient is the unweighted one (TD3+BC's), whatever that advantage."""
    import copy

    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=0, seed=0, device="cpu")
    start = BehaviourStart(pendulum_log(noise=0.5), clone_steps=50, hold_steps=0, anchor=2.5, anchor_beta=2.0, seed=0,
                           progress=False)
    model.learn(1, callback=start)
    monkeypatch.setattr(model.actor.optimizer, "step", lambda: None)  # keep the actor, read its gradient
    draws = copy.deepcopy(start.rng)

    def anchor_gradient(beta: float, advantage: float) -> torch.Tensor:
        calls = []

        def critic(obs, actions):  # Q 1 at the actor's actions (the first call), 1 + advantage at the logged ones
            q = torch.ones(len(obs), 1) + (advantage if calls else 0.0)
            calls.append(q)
            return q, q

        monkeypatch.setattr(model, "critic", critic)
        start.anchor_beta, start.rng = beta, copy.deepcopy(draws)  # the same rows each time
        start._anchor_step()
        return torch.cat([p.grad.flatten() for p in model.actor.parameters() if p.grad is not None])

    unweighted = anchor_gradient(0.0, 0.0)
    assert unweighted.abs().sum() > 0
    for advantage in (-1.0, 0.0, 1.5):  # unnormalised weights would scale it by exp(2 x advantage)
        torch.testing.assert_close(anchor_gradient(2.0, advantage), unweighted)
