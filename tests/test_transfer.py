"""Dream to real, end to end and small enough for CI: 5,000 logged random-policy transitions ->
``fit`` -> PPO only in the dream -> the real CartPole-v1 (the end-to-end issue's acceptance run).

This is one seeded run of a pipeline that is deterministic on CPU (collect, fit and PPO are all
seeded), so it pins a known-good result: a change that breaks data, fitting, the dream or the
training path shows up here. How often transfer holds across seeds and dataset sizes is not a
question one run can answer; ``benchmarks/transfer_cartpole.py`` measures that (3 seeds x 4 sizes)
and the README quotes it, misses included.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import learned_envs
from learned_envs.data.collecting import collect
from learned_envs.fitting import fit
from learned_envs.training import evaluate_in_real, train_in_dream


def _dream_return(model, dream_id: str, episodes: int) -> float:
    """Mean return of ``model``'s deterministic policy inside the dream."""
    env = gym.make(dream_id)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + reward, terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


@pytest.mark.slow
def test_ppo_trained_in_fresh_dream_balances_real_cartpole(tmp_path):
    data = collect("CartPole-v1", 5000, out=tmp_path / "random.npz", seed=21, progress=False)
    assert data.metadata["behaviour_policy"]["kind"] == "random"
    path = fit(tmp_path / "random.npz", tmp_path / "dream.safetensors", seed=0, progress=False)
    learned_envs.register_dream("Test-Transfer-CartPole-v0", path)

    model = train_in_dream("Test-Transfer-CartPole-v0", 100_000, "PPO", seed=0, progress=False)
    real, _ = evaluate_in_real(model, "CartPole-v1", episodes=20, seed=1000)
    dream = _dream_return(model, "Test-Transfer-CartPole-v0", episodes=5)
    assert real >= 475, f"real return {real} after training only in a dream fitted on 5,000 random transitions (dream return {dream})"
    # The dream's own verdict on its agent should be the real env's: it neither flatters nor sandbags.
    assert abs(dream - real) <= 25, f"dream return {dream} vs real return {real}"
