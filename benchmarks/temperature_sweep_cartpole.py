"""Dream-to-real transfer on CartPole under a temperature sweep.

PPO (rl-baselines3-zoo's CartPole hyperparameters) trains only inside Dream-CartPole-v0 at each
temperature, then is scored over 20 deterministic episodes both in the dream (same temperature)
and in the real CartPole-v1. A dream that flatters its agent shows a high dream return beside a
low real one.

    python benchmarks/temperature_sweep_cartpole.py                         # 4 temperatures x 2 seeds x 100k steps
    python benchmarks/temperature_sweep_cartpole.py --steps 30000 --seeds 1  # quicker
    python benchmarks/temperature_sweep_cartpole.py --jobs 2                 # two agents at a time
    python benchmarks/temperature_sweep_cartpole.py --ray auto               # each agent a Ray task on a cluster
    # the same through the CLI:
    learned-envs evaluate Dream-CartPole-v0 --transfer PPO --steps 100000 \
        --sweep temperature=0,0.5,1,1.5 --seeds 2 --out runs/temperature_sweep_cartpole

Prints a table and writes benchmarks/results/temperature_sweep_cartpole.json (and transfer.png in runs/).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "temperature_sweep_cartpole.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dream", default="Dream-CartPole-v0")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--temperatures", default="0,0.5,1,1.5")
    parser.add_argument("--out", default=str(ROOT / "runs" / "temperature_sweep_cartpole"))
    parser.add_argument("--jobs", type=int, default=1, help="agents trained at once, each in its own process")
    parser.add_argument("--ray", metavar="ADDRESS", help='each agent a Ray task: "local" (--jobs CPUs) or a cluster address')
    args = parser.parse_args()
    torch.set_num_threads(1)

    from learned_envs.evaluation import transfer

    temperatures = [float(t) for t in args.temperatures.split(",")]
    start = time.perf_counter()
    result = transfer(args.dream, "PPO", steps=args.steps, sweep={"temperature": temperatures}, seeds=args.seeds,
                      episodes=args.episodes, out_dir=args.out, progress=False, jobs=args.jobs, ray=args.ray)
    result["command"] = (f"python benchmarks/temperature_sweep_cartpole.py --steps {args.steps} --seeds {args.seeds} "
                         f"--episodes {args.episodes} --temperatures {args.temperatures} --jobs {args.jobs}"
                         + (f" --ray {args.ray}" if args.ray else ""))
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    result["checkpoint"] = str(Path(result["checkpoint"]).relative_to(ROOT)) if str(result["checkpoint"]).startswith(str(ROOT)) else result["checkpoint"]
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULT.relative_to(ROOT)} ({result['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
