"""``learned-envs collect``: log transitions from any Gymnasium env.

The behaviour policy is uniform random actions, pink-noise random actions (:class:`PinkNoise`,
Box action spaces), or a saved stable-baselines3 agent that takes a uniformly random action with
probability ``epsilon``. It is recorded in the data's metadata.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from learned_envs.data.transitions import FIELDS, Transitions, as_transitions

_SB3_ALGOS = {"ppo": "PPO", "a2c": "A2C", "dqn": "DQN", "sac": "SAC", "td3": "TD3", "ddpg": "DDPG"}


def load_sb3_agent(path: str | os.PathLike, algo: str = "auto"):
    """Load an SB3 ``.zip``. SB3 zips hold pickled objects: load only files you trust.

    ``algo="auto"`` reads the algorithm from the policy class recorded in the zip.
    """
    import stable_baselines3 as sb3

    if algo == "auto":
        algo = _algo_from_zip(Path(path))
    name = _SB3_ALGOS.get(algo.lower())
    if name is None:
        raise ValueError(f"unknown SB3 algorithm {algo!r}; one of {sorted(_SB3_ALGOS.values())}")
    return getattr(sb3, name).load(path, device="cpu")


def _algo_from_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            data = json.loads(zf.read("data"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a stable-baselines3 agent zip ({exc})") from None
    module = str(data.get("policy_class", {}).get("__module__", ""))
    for key in ("dqn", "sac", "td3", "ddpg"):
        if f".{key}." in module:
            return key
    return "ppo"  # PPO and A2C share ActorCriticPolicy; either loads the other's policy.


def colored_noise(rng: np.random.Generator, steps: int, dims: int, exponent: float = 1.0) -> np.ndarray:
    """``[steps, dims]`` Gaussian noise, unit variance per dimension, whose power falls as
    ``1 / frequency ** exponent`` (0: white, 1: pink, 2: a random walk's red), drawn in the
    frequency domain from ``rng``."""
    if steps < 2:
        return rng.standard_normal((steps, dims))
    freqs = np.fft.rfftfreq(steps)
    freqs[0] = freqs[1]  # no infinite power at frequency 0: the mean drifts like the slowest wave
    amplitude = freqs ** (-exponent / 2)
    spectrum = (rng.standard_normal((dims, freqs.size)) + 1j * rng.standard_normal((dims, freqs.size))) * amplitude
    noise = np.fft.irfft(spectrum, n=steps, axis=-1).T
    return noise / noise.std(axis=0, keepdims=True)


class PinkNoiseStream:
    """Unit-variance pink noise (:func:`colored_noise`, exponent 1), one ``[dims]`` vector per
    call, drawn from ``rng`` in blocks of ``block`` steps."""

    def __init__(self, rng: np.random.Generator, dims: int, block: int = 1000):
        self.rng, self.dims, self.block = rng, dims, block
        self.noise = np.empty((0, dims))

    def __call__(self) -> np.ndarray:
        if not len(self.noise):
            self.noise = colored_noise(self.rng, self.block, self.dims)
        sample, self.noise = self.noise[0], self.noise[1:]
        return sample


class PinkNoise:
    """Random actions of a Box space from pink noise: temporally correlated, so a run of actions
    pushes one way for a while, where uniform random actions average out within a few steps.

    Eberhard et al., "Pink Noise Is All You Need" (ICLR 2023). On MountainCarContinuous-v0, in
    1,000 real steps from 30 seeds, uniform random actions never reached the flag (the car's
    median furthest point x = -0.21); pink noise reached it on 23 seeds (median x = 0.47;
    ``benchmarks/exploration_noise.py``).
    Each dimension is ``center + half_width * clip(noise, -1, 1)``; unbounded dimensions take the
    unit-variance noise as it is.
    """

    def __init__(self, space: gym.spaces.Box, rng: np.random.Generator):
        require_box(space, "pink-noise actions")
        self.space = space
        low, high = space.low.reshape(-1).astype(np.float64), space.high.reshape(-1).astype(np.float64)
        self.bounded = np.isfinite(low) & np.isfinite(high)
        self.center = np.where(self.bounded, (low + high) / 2, 0.0)
        self.half_width = np.where(self.bounded, (high - low) / 2, 1.0)
        self.stream = PinkNoiseStream(rng, low.size)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        noise = self.stream()
        noise = np.where(self.bounded, np.clip(noise, -1.0, 1.0), noise)
        return (self.center + self.half_width * noise).astype(self.space.dtype).reshape(self.space.shape)


def require_box(space: gym.Space, what: str) -> None:
    """A ``ValueError`` naming ``what`` unless ``space`` is a Box (noise added to actions needs one)."""
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"{what} need a Box action space, not {space}; use uniform random actions (white noise)")


def make_behaviour_policy(
    env: gym.Env, policy: str, epsilon: float, rng: np.random.Generator, algo: str = "auto", stochastic: bool = False
) -> tuple[Callable[[np.ndarray], Any], dict[str, Any]]:
    """Return ``act(obs) -> action`` and a JSON description of the behaviour policy.

    ``stochastic``: an SB3 agent's actions are drawn from its policy (SAC's squashed Gaussian,
    PPO's distribution), as D4RL's medium datasets were, rather than its deterministic action.
    A deterministic agent logs one thin tube of states: on such a medium Hopper log, dream agents
    that stayed within 0.03-0.06 (mean absolute action) of the logged actions still fell within
    110-190 real steps, off the tube, where the log says nothing.
    """
    space = env.action_space
    if stochastic and policy in ("random", "pink"):
        raise ValueError(f"stochastic sampling is for an SB3 agent's policy, not policy={policy!r}")
    if policy == "random":
        return (lambda obs: space.sample()), {"kind": "random"}
    if policy == "pink":
        return PinkNoise(space, rng), {"kind": "pink", "exponent": 1.0}
    import torch

    with torch.random.fork_rng(devices=[]):  # building the agent's networks draws from torch's global RNG
        agent = load_sb3_agent(policy, algo)

    def act(obs: np.ndarray) -> Any:
        if epsilon > 0 and rng.random() < epsilon:
            return space.sample()
        if not stochastic:
            return agent.predict(obs, deterministic=True)[0]
        # SB3 samples from torch's global generator: seed it from ours for this one draw, and
        # leave the caller's global state as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**63)))
            return agent.predict(obs, deterministic=False)[0]

    return act, {"kind": "sb3", "path": str(policy), "algo": type(agent).__name__, "epsilon": float(epsilon),
                 "stochastic": stochastic}


def rollout(env: gym.Env, act: Callable[[np.ndarray], Any], steps: int, seed: int, behaviour: dict[str, Any],
            desc: str | None = None) -> Transitions:
    """``steps`` transitions of ``env`` under ``act(obs) -> action``, from ``env.reset(seed=seed)``,
    episodes kept apart; the last one, cut by the budget, is marked truncated."""
    obs_shape = env.observation_space.shape
    rows: dict[str, list] = {k: [] for k in (*FIELDS, "episode_ids")}
    obs, _ = env.reset(seed=seed)
    episode = 0
    for _ in tqdm(range(steps), desc=desc, unit="step", disable=desc is None):
        action = act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(rows, (obs, action, reward, next_obs, terminated, truncated, episode)):
            rows[key].append(value)
        if terminated or truncated:
            obs, _ = env.reset()
            episode += 1
        else:
            obs = next_obs
    # The last episode is cut by the step budget, not by the env: mark it truncated.
    rows["truncations"][-1] = True

    arrays = {k: np.asarray(v) for k, v in rows.items()}
    arrays["observations"] = arrays["observations"].reshape(steps, *obs_shape)
    arrays["next_observations"] = arrays["next_observations"].reshape(steps, *obs_shape)
    env_id = env.spec.id if env.spec is not None else None
    metadata = {"source_env_id": env_id, "behaviour_policy": behaviour, "seed": seed, "collected_steps": steps}
    return as_transitions(arrays, env.observation_space, env.action_space, f"collect({env_id})", metadata)


def collect(
    env_id: str,
    steps: int,
    out: str | os.PathLike | None = None,
    policy: str = "random",
    epsilon: float = 0.0,
    seed: int = 0,
    algo: str = "auto",
    progress: bool = True,
    format: str | None = None,
    stochastic: bool = False,
    **make_kwargs: Any,
) -> Transitions:
    """Step ``env_id`` for ``steps`` transitions under the behaviour policy; save to ``out`` if given.

    ``stochastic``: an SB3 ``policy`` acts by sampling its distribution (see :func:`make_behaviour_policy`).

    ``format`` (npz, minari, hdf5, sb3) defaults to the one ``out`` names: see :func:`learned_envs.data.save`.
    """
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    if out is not None:
        from learned_envs.data import target_format

        target_format(out, format)  # a bad target fails now, not after the steps are spent
    env = gym.make(env_id, **make_kwargs)
    rng = np.random.default_rng(seed)
    env.action_space.seed(int(rng.integers(2**31)))
    act, behaviour = make_behaviour_policy(env, policy, epsilon, rng, algo, stochastic)
    data = rollout(env, act, steps, seed, behaviour, desc=f"collect {env_id}" if progress else None)
    env.close()
    if out is not None:
        from learned_envs.data import save

        save(data, out, format=format)
    return data
