"""The dream's member products through MKL (torch's batched GEMM) and through oneDNN, side by side.

    python benchmarks/gemm_backends.py                # ~1 minute on one CPU thread
    python benchmarks/gemm_backends.py --rows 205 820 --widths 128 200

For each rows-per-member count and layer width: microseconds per ``[E, rows, in] @ [E, in, out] + bias``
through ``torch.baddbmm`` (MKL) and through one ``torch.ops.mkldnn._linear_pointwise`` call per member
(oneDNN), each the best of ``--rounds`` alternating windows, with the largest difference of the two
results and whether the dream's rule (``learned_envs.models.array_ops``: the CPU rule and the
``ONEDNN_MIN_MACS`` threshold) sends that product to oneDNN on this machine. Writes JSON (``--out``).
A 1,024-dream CartPole step has 205 rows a member and 128-wide layers.

Then the agents' side (``learned_envs.fast_linear``): milliseconds per SAC update of SB3's default
networks (256 x 256, batch 256; on Pendulum-v1, whose size changes only the first layer) with plain
``nn.Linear`` layers and with them turned by ``use_onednn`` (oneDNN forced on for the timing),
alternating ``--rounds`` windows of ``--agent-updates`` updates each.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any, Callable

import torch

from learned_envs.models import array_ops


def best_microseconds(functions: dict[str, Callable[[], Any]], seconds: float, rounds: int) -> dict[str, float]:
    """Each function's best time per call over ``rounds`` alternating windows of ``seconds / rounds`` each."""
    best = {name: float("inf") for name in functions}
    for fn in functions.values():
        fn()  # warm up: oneDNN builds its kernel on the first call
    for _ in range(rounds):
        for name, fn in functions.items():
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds / rounds / len(functions):
                fn()
                calls += 1
            best[name] = min(best[name], elapsed / calls * 1e6)
    return best


def sac_update_ms(updates: int, rounds: int, onednn: Any) -> dict[str, float]:
    """Best milliseconds per SAC update, plain layers against turned ones, in alternating windows."""
    import gymnasium as gym
    from stable_baselines3 import SAC

    from learned_envs import fast_linear

    agents = {}
    for name in ("plain", "onednn"):
        agent = SAC("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=0, buffer_size=5000, seed=0, device="cpu")
        agent.learn(1000)  # fills the buffer (and trains a little, identically for both)
        agents[name] = agent
    previous, array_ops.ONEDNN_LINEAR = array_ops.ONEDNN_LINEAR, onednn
    try:
        fast_linear.use_onednn(agents["onednn"].policy)
        best = {name: float("inf") for name in agents}
        for _ in range(rounds):
            for name, agent in agents.items():
                start = time.perf_counter()
                agent.train(gradient_steps=updates, batch_size=256)
                best[name] = min(best[name], (time.perf_counter() - start) / updates * 1e3)
    finally:
        array_ops.ONEDNN_LINEAR = previous
    return {"plain_ms": round(best["plain"], 2), "onednn_ms": round(best["onednn"], 2),
            "plain/onednn": round(best["plain"] / best["onednn"], 2), "updates_per_window": updates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--rows", type=int, nargs="+", default=[52, 205, 820], help="rows per member (256, 1,024, 4,096 dreams of 5 members)")
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 200, 256], help="square hidden layers, in = out")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per product, split into --rounds windows")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--agent-updates", type=int, default=200, help="SAC updates per timing window (0 skips the agents' side)")
    parser.add_argument("--out", default="benchmarks/results/gemm_backends.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    onednn = array_ops.onednn_linear_op()
    if onednn is None:
        raise SystemExit("this torch build has no oneDNN linear (torch.ops.mkldnn._linear_pointwise)")
    generator = torch.Generator().manual_seed(0)
    rows_out = []
    print("| rows a member | in x out | MKL baddbmm (us) | oneDNN (us) | MKL / oneDNN | max difference | the dream uses |")
    print("|---:|---|---:|---:|---:|---:|---|")
    with torch.inference_mode():
        for rows in args.rows:
            for width in args.widths:
                E = args.members
                x = torch.randn(E, rows, width, generator=generator)
                weight = torch.randn(E, width, width, generator=generator) / width**0.5
                bias = torch.randn(E, 1, width, generator=generator)

                def mkl() -> torch.Tensor:
                    return torch.baddbmm(bias, x, weight)

                def one_dnn() -> torch.Tensor:
                    return torch.stack([onednn(x[e], weight[e].t(), bias[e, 0], "none", [], "") for e in range(E)])

                times = best_microseconds({"mkl": mkl, "onednn": one_dnn}, args.seconds, args.rounds)
                difference = float((mkl() - one_dnn()).abs().max())
                chosen = array_ops.onednn_takes(rows * width * width, weight)
                row = {"rows_per_member": rows, "in": width, "out": width, "mkl_us": round(times["mkl"], 1),
                       "onednn_us": round(times["onednn"], 1), "mkl/onednn": round(times["mkl"] / times["onednn"], 2),
                       "max_abs_difference": difference, "dream_uses": "oneDNN" if chosen else "MKL"}
                rows_out.append(row)
                print(f"| {rows} | {width} x {width} | {row['mkl_us']:,} | {row['onednn_us']:,} | {row['mkl/onednn']} | "
                      f"{difference:.2g} | {row['dream_uses']} |")
    agent = sac_update_ms(args.agent_updates, args.rounds, onednn) if args.agent_updates > 0 else None
    if agent is not None:
        print(f"\nSAC update (256 x 256, batch 256): nn.Linear {agent['plain_ms']} ms, OneDNNLinear {agent['onednn_ms']} ms "
              f"({agent['plain/onednn']}x)")
    result = {
        "benchmark": "gemm_backends",
        "members": args.members,
        "threads": args.threads,
        "onednn_outruns_mkl_here": array_ops.onednn_outruns_mkl(),
        "platform": {"torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor()},
        "rows": rows_out,
        "sac_update": agent,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
