"""Dream-to-real transfer on the shipped classic-control dreams.

For each env and seed: an SB3 agent fit for the action space (DQN for discrete actions, SAC for
continuous ones; rl-baselines3-zoo hyperparameters from ``learned_envs.training``) trains only
inside the shipped dream and is scored over 20 deterministic episodes of the real env. Beside it,
the same agent trained in the real env for the same number of steps, and the number of logged
real transitions the dream was fitted on (from the checkpoint).

    python benchmarks/transfer_suite.py                                   # full: 4 envs x 3 seeds, zoo step counts
    python benchmarks/transfer_suite.py --jobs 2                          # the same, two runs at a time
    python benchmarks/transfer_suite.py --ray auto                        # each run a Ray task on a running cluster
    python benchmarks/transfer_suite.py --envs Pendulum-v1 --seeds 0 --steps 10000   # reduced
    python benchmarks/transfer_suite.py --envs MountainCar-v0 --dream-kwarg temperature=0.5
    python benchmarks/transfer_suite.py --table-from old.json rerun.json   # one table from earlier runs (later files win)

Writes benchmarks/results/transfer_suite.json (``--out``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import gymnasium as gym
import torch

import learned_envs
from learned_envs.checkpoint import read_metadata
from learned_envs.parallel import run_independent
from learned_envs.training import evaluate_in_real, train_in_dream, train_in_real

# env id -> (dream id, algorithm, default training steps (the zoo's n_timesteps, capped), target real mean return)
SUITE = {
    "Pendulum-v1": ("Dream-Pendulum-v0", "SAC", 20_000, -200.0),
    "Acrobot-v1": ("Dream-Acrobot-v0", "DQN", 100_000, -100.0),
    "MountainCar-v0": ("Dream-MountainCar-v0", "DQN", 120_000, -130.0),
    "MountainCarContinuous-v0": ("Dream-MountainCarContinuous-v0", "SAC", 50_000, 90.0),
}


def run_one(env_id: str, seed: int, steps: int, episodes: int, dream_kwargs: dict, real: bool, threads: int = 1) -> dict:
    torch.set_num_threads(threads)  # again here: a worker process starts with torch's default
    dream_id, algo, _, _ = SUITE[env_id]
    t0 = time.perf_counter()
    agent = train_in_dream(dream_id, steps, algo, seed=seed, progress=False, **dream_kwargs)
    dream_s = time.perf_counter() - t0
    dream_mean, dream_std = evaluate_in_real(agent, env_id, episodes, seed=10_000 + seed)
    row = {"seed": seed, "dream_train_seconds": round(dream_s, 1),
           "real_return_of_dream_agent": dream_mean, "real_return_std_of_dream_agent": dream_std}
    if real:
        t0 = time.perf_counter()
        real_agent = train_in_real(env_id, steps, algo, seed=seed, progress=False)
        row["real_train_seconds"] = round(time.perf_counter() - t0, 1)
        row["real_return_of_real_agent"], row["real_return_std_of_real_agent"] = evaluate_in_real(real_agent, env_id, episodes, seed=10_000 + seed)
    print(json.dumps({"env": env_id, "steps": steps, **row}), flush=True)
    return row


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(results: list[dict]) -> str:
    lines = [
        "| env | dream | agent | steps | logged transitions | real return, trained in the dream | real return, trained in the real env | target | met |",
        "|---|---|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in results:
        dream = [s["real_return_of_dream_agent"] for s in r["seeds"]]
        real = [s["real_return_of_real_agent"] for s in r["seeds"] if "real_return_of_real_agent" in s]
        met = "yes" if statistics.mean(dream) >= r["target"] else "no"
        knobs = "".join(f", {k}={v}" for k, v in r["dream_kwargs"].items())
        lines.append(f"| {r['env']} | {r['dream']}{knobs} | {r['algo']} | {r['steps']:,} | {r['logged_transitions']:,} | "
                     f"{_mean_std(dream)} | {_mean_std(real)} | {r['target']:g} | {met} |")
    seeds = sorted({s["seed"] for r in results for s in r["seeds"]})
    lines.append(f"\nMean ± std over seeds {seeds} of each agent's mean return over the real-env episodes.")
    return "\n".join(lines)


def merge_runs(runs: list[dict]) -> list[dict]:
    """One result per env from several runs' files, in order: a later file's row for an env and
    seed updates the earlier one field by field, so a dream-only rerun (``--no-real``) keeps the
    earlier run's agents trained in the real env, whose training involves no dream."""
    merged: dict[str, dict] = {}
    for run in runs:
        for result in run["results"]:
            earlier = merged.get(result["env"])
            seeds = {s["seed"]: dict(s) for s in (earlier["seeds"] if earlier else [])}
            for row in result["seeds"]:
                seeds.setdefault(row["seed"], {}).update(row)
            merged[result["env"]] = {**result, "seeds": [seeds[k] for k in sorted(seeds)]}
    return list(merged.values())


def _knob(text: str):
    key, _, value = text.partition("=")
    try:
        return key.strip(), float(value)
    except ValueError:
        return key.strip(), None if value.strip().lower() == "none" else value.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(SUITE), choices=list(SUITE))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="training steps per agent for every env (default: per env, the zoo's n_timesteps)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--no-real", action="store_true", help="skip the agents trained in the real env")
    parser.add_argument("--dream-kwarg", action="append", default=[], metavar="KNOB=VALUE", help="override a dream knob (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process")
    parser.add_argument("--ray", metavar="ADDRESS", help='each run a Ray task: "local" (--jobs CPUs) or a cluster address ("auto", "ray://head:10001")')
    parser.add_argument("--out", default="benchmarks/results/transfer_suite.json")
    parser.add_argument("--table-from", nargs="+", metavar="JSON", help="print one table from result files of earlier runs, and run nothing; "
                        "a later file's rows update an earlier one's, env by env and seed by seed")
    args = parser.parse_args()
    if args.table_from:
        runs = [json.loads(Path(path).read_text()) for path in args.table_from]
        print(table(merge_runs(runs)))
        for path, run in zip(args.table_from, runs):
            print(f"{path}: {run['command']}")
        return
    torch.set_num_threads(args.threads)
    dream_kwargs = dict(_knob(k) for k in args.dream_kwarg)

    # Every (env, seed) run is independent; --jobs runs that many at once (or --ray sends each to
    # Ray), one torch thread each; rows come back in task order either way.
    tasks = [(env_id, seed, args.steps or SUITE[env_id][2], args.episodes, dream_kwargs, not args.no_real, args.threads)
             for env_id in args.envs for seed in args.seeds]
    rows = list(run_independent(run_one, tasks, jobs=args.jobs, ray_address=args.ray))

    results = []
    for env_id in args.envs:
        dream_id, algo, default_steps, target = SUITE[env_id]
        meta = read_metadata(gym.spec(dream_id).kwargs["checkpoint"])
        steps = args.steps or default_steps
        seeds = [row for task, row in zip(tasks, rows) if task[0] == env_id]
        results.append({
            "env": env_id, "dream": dream_id, "algo": algo, "steps": steps, "target": target,
            "dream_kwargs": dream_kwargs, "dream_defaults": {k: v for k, v in meta["dream"].items() if k != "id"},
            "logged_transitions": meta["dataset"]["transitions"], "logged_episodes": meta["dataset"]["episodes"],
            "behaviour_policy": meta["dataset"].get("behaviour_policy"), "seeds": seeds,
        })

    text = table(results)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": "python benchmarks/transfer_suite.py " + " ".join(
            [f"--envs {' '.join(args.envs)}", f"--seeds {' '.join(map(str, args.seeds))}", f"--episodes {args.episodes}"]
            + ([f"--steps {args.steps}"] if args.steps else []) + (["--no-real"] if args.no_real else [])
            + [f"--dream-kwarg {k}" for k in args.dream_kwarg]),
        "learned_envs_version": learned_envs.__version__ if hasattr(learned_envs, "__version__") else None,
        "torch_threads": args.threads, "jobs": args.jobs, "ray": args.ray, "machine": platform.platform(), "results": results, "table": text,
    }, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
