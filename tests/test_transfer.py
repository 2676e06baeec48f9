"""Dream to real, end to end and small enough for CI: 5,000 logged random-policy transitions ->
``fit`` -> PPO only in the dream, checked in the dream every 10k steps (``SelectInDream``, as the
transfer benchmark trains) -> the real CartPole-v1 (the end-to-end issue's acceptance run).

Each run is seeded and deterministic on one machine with one set of dependency versions, but
transfer is a chaotic outcome of float arithmetic: a single pinned seed that scored 500 went to
268.9 (the cart drifting out of bounds in every real episode) with no change to the package, only
to what CI installed. So this runs five seeds and asks for what the benchmark supports: most
agents balance the real pole, and the dream's verdict on the typical agent is the real env's. A
change that breaks data, fitting, the dream or the training path fails every seed, not one.
How often transfer holds across seeds and dataset sizes is measured by
``benchmarks/transfer_cartpole.py`` (the README quotes it, misses included).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import learned_envs
from learned_envs.data.collecting import collect
from learned_envs.fitting import fit
from learned_envs.training import SelectInDream, evaluate_in_real, train_in_dream


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


SEEDS = range(5)


@pytest.mark.slow
def test_ppo_trained_in_fresh_dreams_balances_real_cartpole(tmp_path):
    real, dream = [], []
    for seed in SEEDS:
        data = collect("CartPole-v1", 5000, out=tmp_path / f"random{seed}.npz", seed=21 + seed, progress=False)
        assert data.metadata["behaviour_policy"]["kind"] == "random"
        path = fit(tmp_path / f"random{seed}.npz", tmp_path / f"dream{seed}.safetensors", seed=seed, progress=False)
        dream_id = f"Test-Transfer{seed}-CartPole-v0"
        learned_envs.register_dream(dream_id, path)
        model = train_in_dream(dream_id, 100_000, "PPO", seed=seed, progress=False, callbacks=[SelectInDream(dream_id, 10_000)])
        real.append(evaluate_in_real(model, "CartPole-v1", episodes=20, seed=1000)[0])
        dream.append(_dream_return(model, dream_id, episodes=5))
    balanced = sum(r >= 475 for r in real)
    assert balanced >= 3, (f"real returns {real} (dream returns {dream}): {balanced} of {len(real)} agents trained only "
                           "in dreams fitted on 5,000 random transitions balance the real pole")
    # The dream's verdict on the typical agent is the real env's: it neither flatters nor sandbags.
    assert abs(np.median(dream) - np.median(real)) <= 25, f"dream returns {dream} vs real returns {real}"
