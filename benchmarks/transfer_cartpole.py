"""How few logged transitions does a dream need? Dream-to-real transfer on CartPole-v1.

For each dataset size and seed: collect that many uniform-random CartPole-v1 transitions,
fit a dream with the default settings (nothing CartPole-specific), train PPO (rl-zoo
hyperparameters, 100k steps) only in the dream, handing back the last policy unless the dream
scored an earlier one clearly better (``SelectInDream``: 10 dream episodes every 10k steps, no
real step; ``--select-every 0`` keeps the last policy always), and score it over 20 real episodes. The last policy is scored too, so
one run shows what the check changed. Beside it: PPO trained directly in the real env with
the same real-transition budget, and the wall time of PPO's 100k steps in the dream (checks
included) against the real env, measured in the same run.

    python benchmarks/transfer_cartpole.py                      # full: 4 sizes x 3 seeds (~30 min on 2 cores)
    python benchmarks/transfer_cartpole.py --sizes 1000 --seeds 0 --ppo-steps 20000   # smoke
    python benchmarks/transfer_cartpole.py --dream-kwarg bounds_margin=1   # a dream knob other than its default

Writes benchmarks/results/transfer_cartpole.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import learned_envs
from learned_envs.cli import parse_knobs
from learned_envs.data.collecting import collect
from learned_envs.fitting import fit
from learned_envs.training import SelectInDream, evaluate_in_real, train_in_dream, train_in_real

ENV_ID = "CartPole-v1"


class SelectKeepingLast(SelectInDream):
    """:class:`SelectInDream` that also keeps the last policy's parameters, to score both."""

    def _on_training_end(self) -> None:
        self.last_state = copy.deepcopy(self.model.policy.state_dict())
        super()._on_training_end()


def run_one(size: int, seed: int, ppo_steps: int, episodes: int, workdir: Path, timing: bool = True,
            collect_seed_base: int = 1000, dream_kwargs: dict | None = None, select_every: int = 10_000) -> dict:
    data_path = workdir / f"random_{size}_{seed}.npz"
    collect(ENV_ID, size, out=data_path, seed=collect_seed_base + seed, progress=False)
    t0 = time.perf_counter()
    ckpt = fit(data_path, workdir / f"dream_{size}_{seed}.safetensors", seed=seed, progress=False)
    fit_s = time.perf_counter() - t0
    dream_id = f"Bench-CartPole-{size}-{seed}-v0"
    learned_envs.register_dream(dream_id, ckpt)
    t0 = time.perf_counter()
    select = SelectKeepingLast(dream_id, select_every, **(dream_kwargs or {})) if select_every else None
    agent = train_in_dream(dream_id, ppo_steps, "PPO", seed=seed, progress=False, callbacks=[select] if select else (),
                           **(dream_kwargs or {}))
    dream_train_s = time.perf_counter() - t0
    dream_return, dream_std = evaluate_in_real(agent, ENV_ID, episodes, seed=10_000 + seed)
    selection = None
    if select is not None:
        kept = copy.deepcopy(agent.policy.state_dict())
        agent.policy.load_state_dict(select.last_state)
        selection = {"kept_step": select.chosen[0], "kept_dream_return": select.chosen[1], "checks": select.history,
                     "real_return_of_last_policy": evaluate_in_real(agent, ENV_ID, episodes, seed=10_000 + seed)[0]}
        agent.policy.load_state_dict(kept)
    # PPO in the real env, allowed only as many real transitions as the dream was fitted on.
    budget_agent = train_in_real(ENV_ID, size, "PPO", seed=seed, progress=False)
    budget_return, _ = evaluate_in_real(budget_agent, ENV_ID, episodes, seed=10_000 + seed)
    # The same PPO run in the real env right after the dream one, so the pair shares machine load.
    real_train_s = None
    if timing:
        t0 = time.perf_counter()
        train_in_real(ENV_ID, ppo_steps, "PPO", seed=seed, progress=False)
        real_train_s = round(time.perf_counter() - t0, 1)
    return {
        "transitions": size,
        "seed": seed,
        "collect_seed": collect_seed_base + seed,
        "fit_seconds": round(fit_s, 1),
        "dream_ppo_seconds": round(dream_train_s, 1),
        "real_ppo_seconds": real_train_s,
        "real_return_of_dream_agent": dream_return,
        "real_return_std_of_dream_agent": dream_std,
        "real_return_of_ppo_with_same_budget": budget_return,
        "selection": selection,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 5000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ppo-steps", type=int, default=100_000)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps timings comparable)")
    parser.add_argument("--no-timing", action="store_true", help="skip the paired PPO run in the real env that times the dream")
    parser.add_argument("--collect-seed-base", type=int, default=1000,
                        help="seed S collects with seed BASE+S (tests/test_transfer.py uses 21)")
    parser.add_argument("--dream-kwarg", action="append", default=[], metavar="KNOB=VALUE",
                        help="a dream knob for PPO's training, over the fitted dream's defaults (repeatable)")
    parser.add_argument("--select-every", type=int, default=10_000, metavar="STEPS",
                        help="check the policy in the dream every STEPS steps (SelectInDream; 0: keep the last one always)")
    parser.add_argument("--out", default="benchmarks/results/transfer_cartpole.json")
    args = parser.parse_args()
    dream_kwargs = parse_knobs(args.dream_kwarg, "--dream-kwarg")
    torch.set_num_threads(args.threads)

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for seed in args.seeds:
                row = run_one(size, seed, args.ppo_steps, args.episodes, Path(tmp), timing=not args.no_timing,
                              collect_seed_base=args.collect_seed_base, dream_kwargs=dream_kwargs, select_every=args.select_every)
                runs.append(row)
                chosen = row["selection"]
                kept = "" if chosen is None else (f" (kept step {chosen['kept_step']:,}, dream {chosen['kept_dream_return']:.1f}; "
                                                  f"last policy {chosen['real_return_of_last_policy']:.1f})")
                print(f"  {size:>5} transitions, seed {seed}: dream agent {row['real_return_of_dream_agent']:6.1f} real return{kept} "
                      f"(PPO with the same real budget: {row['real_return_of_ppo_with_same_budget']:6.1f}); "
                      f"fit {row['fit_seconds']} s, PPO in dream {row['dream_ppo_seconds']} s", flush=True)

    dream_times = [r["dream_ppo_seconds"] for r in runs]
    real_times = [r["real_ppo_seconds"] for r in runs if r["real_ppo_seconds"]]
    ratios = [r["dream_ppo_seconds"] / r["real_ppo_seconds"] for r in runs if r["real_ppo_seconds"]] or [float("nan")]

    table = []
    for size in args.sizes:
        rows = [r for r in runs if r["transitions"] == size]
        returns = [r["real_return_of_dream_agent"] for r in rows]
        last = [r["selection"]["real_return_of_last_policy"] for r in rows if r["selection"]]
        table.append(
            {
                "transitions": size,
                "dream_agent_real_return_mean": statistics.mean(returns),
                "dream_agent_real_return_min": min(returns),
                "seeds_at_or_above_475": sum(r >= 475 for r in returns),
                "last_policy_seeds_at_or_above_475": sum(r >= 475 for r in last) if last else None,
                "ppo_same_budget_real_return_mean": statistics.mean(r["real_return_of_ppo_with_same_budget"] for r in rows),
            }
        )
    ratio = statistics.median(ratios)
    print(f"\n| logged random transitions | PPO in dream -> real return (mean, min over {len(args.seeds)} seeds) | seeds >= 475 | "
          "the last policy instead of the kept one: seeds >= 475 | PPO in real env with the same real-transition budget |")
    print("|---:|---:|---:|---:|---:|")
    for t in table:
        last = "-" if t["last_policy_seeds_at_or_above_475"] is None else f"{t['last_policy_seeds_at_or_above_475']}/{len(args.seeds)}"
        print(f"| {t['transitions']:,} | {t['dream_agent_real_return_mean']:.1f} (min {t['dream_agent_real_return_min']:.1f}) | "
              f"{t['seeds_at_or_above_475']}/{len(args.seeds)} | {last} | {t['ppo_same_budget_real_return_mean']:.1f} |")
    if real_times:
        print(f"\nPPO {args.ppo_steps:,} steps: {statistics.median(dream_times):.1f} s in the dream vs {statistics.median(real_times):.1f} s "
              f"in the real env (medians; median of paired ratios {ratio:.2f}, max {max(ratios):.2f})")

    result = {
        "benchmark": "transfer_cartpole",
        "command": "python benchmarks/transfer_cartpole.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
        "ppo_steps": args.ppo_steps,
        "dream_kwargs": dream_kwargs,
        "select_every": args.select_every,
        "table": table,
        "runs": runs,
        "ppo_wall_seconds_dream_median": statistics.median(dream_times),
        "ppo_wall_seconds_real_median": statistics.median(real_times) if real_times else None,
        "ppo_wall_ratio_dream_over_real_median": ratio,
        "ppo_wall_ratio_dream_over_real_max": max(ratios),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
