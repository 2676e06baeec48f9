"""What the objective an agent maximises in a dream says about policies: their discounted returns there.

An agent trained in a dream climbs the return the dream pays under its training settings (the
preset's resets, halt, penalty and time limit) discounted at the agent's gamma, not the real env's
undiscounted episode return. Where a policy that is better in the real env is worth less in the
dream than a worse one, no amount of training in that dream will find it. For each agent this plays
``--rollouts`` dream episodes at once, one from each reset the dream's settings draw (seeded by
``--seed``; the same resets for every agent), each agent's deterministic action every step, and
reports the mean discounted return at each ``--gamma``, the undiscounted return, the mean length,
and how the episodes ended: the disagreement halt, the learned end rule (a fall), or the time
limit. Agents are SB3 zips (``NAME=agent.zip``)::

    python benchmarks/dream_values.py DREAM.safetensors --agents clone=ck_50000.zip sac=final.zip \\
        --rollouts 256 --horizon 300 --gamma 0.99 0.999 [--dream-kwarg halt_threshold=none] --out runs/values.json

The dream's stored knobs (a preset's) apply unless ``--dream-kwarg`` overrides them; ``--horizon``
is the episodes' time limit. Nothing here steps a real env.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learned_envs.cli import parse_knobs
from learned_envs.data.collecting import load_sb3_agent
from learned_envs.registry import register_dream
from learned_envs.sb3 import make_vec_env

DREAM_ID = "Dream-DreamValues-v0"


def first_episodes(agent: Any, rollouts: int, horizon: int, seed: int, **knobs: Any) -> dict[str, np.ndarray]:
    """The first episode of each of ``rollouts`` dreams under ``agent``'s deterministic policy.

    Returns ``rewards [rollouts, horizon]`` (0 after a row's end), ``lengths [rollouts]`` and each
    row's ending: ``halted``, ``fell`` (terminated but not halted) and ``timed_out`` ``[rollouts]`` bools.
    """
    venv = make_vec_env(DREAM_ID, n_envs=rollouts, seed=seed, monitor=False, max_episode_steps=horizon, **knobs)
    obs = venv.reset()
    rewards = np.zeros((rollouts, horizon))
    lengths = np.full(rollouts, horizon)
    halted, fell = np.zeros(rollouts, bool), np.zeros(rollouts, bool)
    alive = np.ones(rollouts, bool)
    for t in range(horizon):
        action, _ = agent.predict(obs, deterministic=True)
        obs, reward, done, infos = venv.step(action)
        rewards[alive, t] = reward[alive]
        for i in np.flatnonzero(alive & done):
            truncated = infos[i].get("TimeLimit.truncated", False)
            halted[i] = bool(infos[i].get("halted", False))
            fell[i] = not truncated and not halted[i]
            lengths[i] = t + 1
        alive &= ~done
        if not alive.any():
            break
    venv.close()
    return {"rewards": rewards, "lengths": lengths, "halted": halted, "fell": fell, "timed_out": ~(halted | fell)}


def summarise(episodes: dict[str, np.ndarray], gammas: list[float]) -> dict[str, Any]:
    """Mean discounted return at each gamma, mean return and length, and the share of each ending."""
    rewards = episodes["rewards"]
    steps = np.arange(rewards.shape[1])
    return {"discounted": {str(g): float((rewards * g ** steps).sum(1).mean()) for g in gammas},
            "return": float(rewards.sum(1).mean()), "length": float(episodes["lengths"].mean()),
            **{f"share_{end}": float(episodes[end].mean()) for end in ("halted", "fell", "timed_out")}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dream", help="the dream checkpoint the agents trained in (its stored knobs apply)")
    p.add_argument("--agents", nargs="+", required=True, metavar="NAME=ZIP", help="SB3 agents to value")
    p.add_argument("--rollouts", type=int, default=256, help="dream episodes an agent (one per reset)")
    p.add_argument("--horizon", type=int, default=300, help="the episodes' time limit")
    p.add_argument("--gamma", type=float, nargs="+", default=[0.99], help="discount factors to value at")
    p.add_argument("--dream-kwarg", action="append", metavar="KNOB=VALUE", help="a dream knob over the stored one")
    p.add_argument("--seed", type=int, default=0, help="seed of the resets and the dream's draws")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", type=Path, help="JSON to write")
    args = p.parse_args(argv)
    if args.rollouts < 1 or args.horizon < 1 or not all(0 < g <= 1 for g in args.gamma):
        p.error("--rollouts and --horizon must be >= 1 and every --gamma in (0, 1]")
    named = dict(item.split("=", 1) for item in args.agents if "=" in item)
    if len(named) != len(args.agents):
        p.error("--agents takes NAME=ZIP pairs")
    torch.set_num_threads(args.threads)
    register_dream(DREAM_ID, args.dream)
    knobs = parse_knobs(args.dream_kwarg, "--dream-kwarg")

    rows = {}
    for name, path in named.items():
        rows[name] = summarise(first_episodes(load_sb3_agent(path), args.rollouts, args.horizon, args.seed, **knobs),
                               args.gamma)
        row = rows[name]
        values = "  ".join(f"V@{g}={v:8.1f}" for g, v in row["discounted"].items())
        print(f"{name:>16}: {values}  return {row['return']:8.1f}  length {row['length']:6.1f}  halted "
              f"{row['share_halted']:.0%}  fell {row['share_fell']:.0%}  timed out {row['share_timed_out']:.0%}", flush=True)
    result = {"command": "python benchmarks/dream_values.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "dream": args.dream, "dream_kwargs": knobs, "rollouts": args.rollouts, "horizon": args.horizon,
              "seed": args.seed, "agents": named, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
