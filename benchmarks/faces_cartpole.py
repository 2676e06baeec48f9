"""Does the batched SB3 VecEnv train agents as well as single dreams do? PPO on Dream-CartPole-v0.

The same PPO (rl-zoo CartPole hyperparameters, 8 envs, 100k steps) trains in the shipped dream
through two faces of the same core:
  - ``learned_envs.sb3.make_vec_env("Dream-CartPole-v0", n_envs=8)``: 8 dreams, one forward call;
  - SB3's own ``make_vec_env(lambda: gym.make("Dream-CartPole-v0"), n_envs=8)``: a DummyVecEnv
    looping over 8 single ``DreamEnv``s, as an SB3 user would write it without learned-envs;
and each agent is scored over 20 episodes of the real CartPole-v1. Wall time is measured too.

    python benchmarks/faces_cartpole.py                 # 3 seeds x 2 faces, ~6 min on one core
    python benchmarks/faces_cartpole.py --seeds 0 --steps 20000   # smoke

Writes benchmarks/results/faces_cartpole.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import gymnasium as gym
import stable_baselines3 as sb3
import torch
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env

import learned_envs
from learned_envs.sb3 import make_vec_env
from learned_envs.training import evaluate_in_real, hyperparameters

DREAM, REAL = "Dream-CartPole-v0", "CartPole-v1"
FACES = {
    "learned_envs.sb3.make_vec_env (batched)": lambda n, seed: make_vec_env(DREAM, n_envs=n, seed=seed),
    "DummyVecEnv of single gym.make dreams": lambda n, seed: sb3_make_vec_env(lambda: gym.make(DREAM), n_envs=n, seed=seed),
}


def run(face: str, seed: int, steps: int, episodes: int) -> dict:
    params = hyperparameters("PPO", REAL)
    n_envs, policy = params.pop("n_envs"), params.pop("policy")
    venv = FACES[face](n_envs, seed)
    model = sb3.PPO(policy, venv, seed=seed, verbose=0, device="cpu", **params)
    start = time.perf_counter()
    model.learn(steps)
    seconds = time.perf_counter() - start
    mean, std = evaluate_in_real(model, REAL, episodes, seed=10_000 + seed)
    row = {"face": face, "seed": seed, "train_seconds": round(seconds, 1), "real_return": mean, "real_return_std": std}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/faces_cartpole.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = [run(face, seed, args.steps, args.episodes) for seed in args.seeds for face in FACES]
    lines = ["| face | real return (mean over seeds) | min | PPO wall time (median) |", "|---|---:|---:|---:|"]
    for face in FACES:
        mine = [r for r in rows if r["face"] == face]
        returns = [r["real_return"] for r in mine]
        lines.append(f"| {face} | {statistics.mean(returns):.1f} | {min(returns):.1f} | "
                     f"{statistics.median(r['train_seconds'] for r in mine):.1f} s |")
    table = "\n".join(lines)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "command": f"python benchmarks/faces_cartpole.py --seeds {' '.join(map(str, args.seeds))} --steps {args.steps} --episodes {args.episodes}",
        "dream": DREAM, "learned_envs_version": learned_envs.__version__, "machine": platform.platform(),
        "rows": rows, "table": table,
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
