"""Dream to real, end to end and small enough for CI: 1,000 random transitions -> fit -> PPO only
in the dream -> the real CartPole-v1."""

from __future__ import annotations

import learned_envs
from learned_envs.data.collecting import collect
from learned_envs.fitting import fit
from learned_envs.training import evaluate_in_real, train_in_dream


def test_ppo_trained_in_fresh_dream_balances_real_cartpole(tmp_path):
    data = collect("CartPole-v1", 1000, out=tmp_path / "random.npz", seed=11, progress=False)
    assert data.metadata["behaviour_policy"]["kind"] == "random"
    path = fit(tmp_path / "random.npz", tmp_path / "dream.safetensors", seed=0, progress=False)
    learned_envs.register_dream("Test-Transfer-CartPole-v0", path)

    model = train_in_dream("Test-Transfer-CartPole-v0", 100_000, "PPO", seed=0, progress=False)
    mean, _ = evaluate_in_real(model, "CartPole-v1", episodes=20, seed=1000)
    assert mean >= 475, f"real return {mean} after training only in a dream fitted on 1,000 transitions"
