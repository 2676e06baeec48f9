"""Training off-the-shelf SB3 agents inside dreams, and scoring them in the real env.

The hyperparameters are rl-baselines3-zoo's tuned ones where the zoo has them, so that an agent
trained in a dream is the same agent a user would train in the real env.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import LinearSchedule
from tqdm.auto import tqdm

# rl-baselines3-zoo hyperparameters (hyperparams/ppo.yml, CartPole-v1).
ZOO_HYPERPARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("PPO", "CartPole-v1"): {
        "n_envs": 8,
        "policy": "MlpPolicy",
        "n_steps": 32,
        "batch_size": 256,
        "gae_lambda": 0.8,
        "gamma": 0.98,
        "n_epochs": 20,
        "ent_coef": 0.0,
        "learning_rate": ("linear", 1e-3),
        "clip_range": ("linear", 0.2),
    },
}


def hyperparameters(algo: str, env_id: str | None) -> dict[str, Any]:
    """The zoo's hyperparameters for ``algo`` on ``env_id``, with linear schedules built; SB3's defaults otherwise."""
    params = dict(ZOO_HYPERPARAMS.get((algo.upper(), env_id or ""), {"n_envs": 8, "policy": "MlpPolicy"}))
    for key, value in params.items():
        if isinstance(value, tuple) and value[0] == "linear":
            params[key] = LinearSchedule(value[1], 0.0, 1.0)
    return params


class ProgressBar(BaseCallback):
    """A tqdm bar over environment steps (SB3's own needs ``rich``)."""

    def __init__(self, total: int, desc: str):
        super().__init__()
        self.total, self.desc, self.bar = total, desc, None

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.total, desc=self.desc, unit="step")

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


def train_in_dream(
    dream_id: str,
    steps: int,
    algo: str = "PPO",
    seed: int = 0,
    progress: bool = True,
    **dream_kwargs: Any,
):
    """Train an SB3 ``algo`` for ``steps`` environment steps, only inside ``dream_id``."""
    import stable_baselines3 as sb3

    from learned_envs.checkpoint import read_metadata
    from learned_envs.sb3 import make_vec_env

    source_env = read_metadata(gym.spec(dream_id).kwargs["checkpoint"]).get("source_env_id")
    params = hyperparameters(algo, source_env)
    n_envs, policy = params.pop("n_envs"), params.pop("policy")
    venv = make_vec_env(dream_id, n_envs=n_envs, seed=seed, **dream_kwargs)
    model = getattr(sb3, algo.upper())(policy, venv, seed=seed, verbose=0, device="cpu", **params)
    callback = ProgressBar(steps, f"{algo} in {dream_id}") if progress else None
    model.learn(steps, callback=callback)
    return model


def train_in_real(env_id: str, steps: int, algo: str = "PPO", seed: int = 0, progress: bool = True):
    """The same agent trained in the real env, for comparison."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env

    params = hyperparameters(algo, env_id)
    n_envs, policy = params.pop("n_envs"), params.pop("policy")
    venv = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    model = getattr(sb3, algo.upper())(policy, venv, seed=seed, verbose=0, device="cpu", **params)
    model.learn(steps, callback=ProgressBar(steps, f"{algo} in {env_id}") if progress else None)
    return model


def evaluate_in_real(model, env_id: str, episodes: int = 20, seed: int = 0) -> tuple[float, float]:
    """Mean and std of the undiscounted return over ``episodes`` deterministic episodes of ``env_id``."""
    env = gym.make(env_id)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns)), float(np.std(returns))
