"""How far random actions travel: uniform against pink-noise actions (``collect --policy pink``).

For each env and seed, ``learned_envs.collect(ENV, steps, policy=...)`` with the seed, and per
run: the episodes that terminated (on MountainCarContinuous-v0: arrivals at the flag) and the
furthest value of the first observation dimension (the car's position). One run, both policies on
the same seeds.

    python benchmarks/exploration_noise.py                       # MountainCarContinuous-v0, 30 seeds of 1,000 steps (~1 min)

Writes benchmarks/results/exploration_noise.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from learned_envs.data.collecting import collect

RESULT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "exploration_noise.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="MountainCarContinuous-v0")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()

    rows = []
    for policy in ("random", "pink"):
        start = time.perf_counter()
        runs = []
        for seed in range(args.seeds):
            data = collect(args.env, args.steps, policy=policy, seed=seed, progress=False)
            runs.append({"seed": seed, "terminations": int(data.terminations.sum()),
                         "furthest_obs0": float(data.next_observations.reshape(args.steps, -1)[:, 0].max())})
        reached = sum(r["terminations"] > 0 for r in runs)
        rows.append({"policy": policy, "seeds_with_a_termination": reached, "seeds": args.seeds,
                     "median_furthest_obs0": float(np.median([r["furthest_obs0"] for r in runs])),
                     "seconds": round(time.perf_counter() - start, 1), "runs": runs})
        print(f"{args.env}, {args.steps} steps, policy {policy:>6}: a termination on {reached}/{args.seeds} seeds, "
              f"median furthest obs[0] {rows[-1]['median_furthest_obs0']:.2f}")
    Path(args.out).write_text(json.dumps({"benchmark": "exploration_noise", "env": args.env, "steps": args.steps,
                                          "command": "python benchmarks/exploration_noise.py", "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
