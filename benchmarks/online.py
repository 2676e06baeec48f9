"""Real steps to a good agent: the learned-envs loop against the same SB3 agent trained in the real env.

For each env and seed: ``learned-envs loop ENV --agent ALGO --real-steps BUDGET --seed S`` (the
package's defaults, nothing tuned per env), its real return after every iteration (``curve.json``)
and the real steps at which it first reaches the env's threshold; beside it, the same SB3 agent
(rl-baselines3-zoo hyperparameters) trained on the real env for the same number of real steps,
scored the same way. Wall time of each.

    python benchmarks/online.py                                           # every env, 3 seeds (hours on 2 cores)
    python benchmarks/online.py --envs Pendulum-v1 --seeds 0 1 2 --jobs 2 # one env

Writes benchmarks/results/online.json and docs/img/online_curves.png, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "online.json"
PLOT = ROOT / "docs" / "img" / "online_curves.png"

# env id -> (agent, real-step budget, threshold on the mean real return): the targets.
ENVS = {
    "CartPole-v1": ("PPO", 1_000, 475.0),
    "Pendulum-v1": ("SAC", 3_000, -200.0),
    "InvertedPendulum-v5": ("SAC", 3_000, 950.0),
    "MountainCarContinuous-v0": ("SAC", 10_000, 90.0),
}


def run_loop(env_id: str, seed: int, workdir: str, eval_episodes: int) -> dict:
    agent, budget, threshold = ENVS[env_id]
    out = Path(workdir) / f"loop_{env_id}_{seed}"
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LEARNED_ENVS_HOME": str(Path(workdir) / "home")}
    subprocess.run([sys.executable, "-m", "learned_envs.cli", "loop", env_id, "--agent", agent, "--real-steps", str(budget),
                    "--seed", str(seed), "--out", str(out)], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loop_seconds = time.perf_counter() - start
    curve = json.loads((out / "curve.json").read_text())["curve"]
    reached = next((p["real_steps"] for p in curve if p["return"] >= threshold), None)

    # The final agent, scored over more episodes than the loop's own per-iteration check.
    from stable_baselines3 import DQN, PPO, SAC  # noqa: F401

    from learned_envs.training import evaluate_in_real, train_in_real

    final = {"PPO": PPO, "SAC": SAC, "DQN": DQN}[agent].load(out / "agent.zip", device="cpu")
    final_return, final_std = evaluate_in_real(final, env_id, episodes=eval_episodes, seed=50_000 + seed)
    start = time.perf_counter()
    real_agent = train_in_real(env_id, budget, agent, seed=seed, progress=False)
    real_seconds = time.perf_counter() - start
    real_return, _ = evaluate_in_real(real_agent, env_id, episodes=eval_episodes, seed=50_000 + seed)
    return {"env": env_id, "agent": agent, "seed": seed, "budget": budget, "threshold": threshold, "curve": curve,
            "loop_final_return": final_return, "loop_final_std": final_std, "loop_steps_to_threshold": reached,
            "loop_seconds": round(loop_seconds, 1), "real_agent_return_at_budget": real_return, "real_agent_seconds": round(real_seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (one core each)")
    parser.add_argument("--episodes", type=int, default=20, help="real episodes scoring each final agent")
    parser.add_argument("--out", default=str(RESULT))
    parser.add_argument("--table-from", nargs="+", metavar="JSON",
                        help="print the table and redraw the plot from earlier runs' files (a later file's row for an env "
                             "and seed replaces an earlier one), and run nothing")
    args = parser.parse_args()
    if args.table_from:
        runs = [json.loads(Path(path).read_text()) for path in args.table_from]
        merged = {(r["env"], r["seed"]): r for run in runs for r in run["rows"]}
        rows = [merged[key] for key in sorted(merged, key=lambda k: (list(ENVS).index(k[0]) if k[0] in ENVS else len(ENVS), k))]
        print(table(rows))
        for path, run in zip(args.table_from, runs):
            print(f"{path}: {run.get('command') or '; '.join(run.get('commands', []))}")
        plot(rows)
        return
    workdir = tempfile.mkdtemp(prefix="online_bench_")
    jobs = [(env_id, seed) for env_id in args.envs for seed in args.seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_loop, env_id, seed, workdir, args.episodes) for env_id, seed in jobs]
        rows = []
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        for future in futures:
            rows.append(future.result())
            r = rows[-1]
            print(f"{r['env']} seed {r['seed']}: loop {r['loop_final_return']:.1f} after {r['budget']} real steps "
                  f"(threshold reached at {r['loop_steps_to_threshold']}), real-env {r['agent']} {r['real_agent_return_at_budget']:.1f}; "
                  f"{r['loop_seconds']} s", flush=True)
            # Written after every run, so an interrupted benchmark keeps what it measured.
            result = {"command": "python benchmarks/online.py " + " ".join(sys.argv[1:]), "rows": rows}
            Path(args.out).write_text(json.dumps(result, indent=2))
    print(table(rows))
    plot(rows)


def table(rows: list[dict]) -> str:
    lines = ["| env | agent | real steps | loop: real return (mean, min over seeds) | seeds ≥ threshold | real steps to threshold (worst seed) "
             "| same agent trained on the real env, same real steps | loop wall time (mean) |", "|---|---|---:|---:|:---:|---:|---:|---:|"]
    for env_id in dict.fromkeys(r["env"] for r in rows):
        rs = [r for r in rows if r["env"] == env_id]
        finals = [r["loop_final_return"] for r in rs]
        met = sum(f >= r["threshold"] for f, r in zip(finals, rs))
        steps = [r["loop_steps_to_threshold"] for r in rs]
        worst = "-" if None in steps else f"{max(steps):,}"
        real = sum(r["real_agent_return_at_budget"] for r in rs) / len(rs)
        lines.append(f"| {env_id} | {rs[0]['agent']} | {rs[0]['budget']:,} | {sum(finals) / len(finals):.1f} ({min(finals):.1f}) | "
                     f"{met}/{len(rs)} (≥ {rs[0]['threshold']:g}) | {worst} | {real:.1f} | {sum(r['loop_seconds'] for r in rs) / len(rs) / 60:.1f} min |")
    return "\n".join(lines)


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r["env"] for r in rows))
    fig, axes = plt.subplots(1, len(envs), figsize=(4.6 * len(envs), 3.4), squeeze=False)
    for ax, env_id in zip(axes[0], envs):
        for r in (r for r in rows if r["env"] == env_id):
            ax.plot([p["real_steps"] for p in r["curve"]], [p["return"] for p in r["curve"]], marker="o", ms=3, label=f"loop, seed {r['seed']}")
            ax.scatter([r["budget"]], [r["real_agent_return_at_budget"]], marker="x", color="k")
        ax.axhline(next(r["threshold"] for r in rows if r["env"] == env_id), color="gray", ls="--", lw=1)
        ax.set_title(f"{env_id} ({next(r['agent'] for r in rows if r['env'] == env_id)})", fontsize=10)
        ax.set_xlabel("real steps")
        ax.set_ylabel("real return")
        ax.grid(True, alpha=0.25)
        ax.legend(fontsize=7, title="x: same agent, real env only", title_fontsize=7)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)


if __name__ == "__main__":
    main()
