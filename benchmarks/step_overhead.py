"""Where a step's time goes at small N: the model forward, the core around it, and each face.

    nice -n 10 python benchmarks/step_overhead.py            # ~1 minute on one CPU thread
    python benchmarks/step_overhead.py --sizes 1 4 16 --device cuda

"- predict" columns replace ``model.predict`` (``predict_host`` for one CPU dream, which steps in
numpy) with a cached output, so they time only what the core (and the face on top of it) adds per step. "ops" counts aten calls per step (torch profiler):
at small N each costs a few microseconds whatever its size, so the count is the overhead. Each
time is the best of ``--repeats`` windows, which keeps a shared machine's noise out.
Writes JSON (``--out``, default benchmarks/results/step_overhead.json) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

import learned_envs  # noqa: F401  (registers the shipped dreams)
from learned_envs.dreams.core import DreamCore
from learned_envs.sb3 import make_vec_env


def best_microseconds(fn: Callable[[], Any], calls: int, repeats: int, sync: Callable[[], None]) -> float:
    """Best mean time of ``fn`` over ``repeats`` windows of ``calls`` calls, in microseconds."""
    for _ in range(20):
        fn()
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def aten_calls(fn: Callable[[], Any], calls: int = 50) -> float:
    """aten operator calls per call of ``fn``."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    return sum(event.count for event in prof.key_averages()) / calls


def cache_predict(core: DreamCore) -> None:
    """Replace the model step the core calls (``predict``, or ``predict_host`` for a single CPU
    dream) by one precomputed output: later steps time the core alone."""
    if core.host:
        out = core.model.predict_host(core.state.numpy(), np.zeros(core.num_envs, dtype=np.int64), generator=core.host_rng)
        core.model.predict_host = lambda *args, **kwargs: out
    else:
        out = core.model.predict(core.state, torch.zeros(core.num_envs, dtype=torch.long, device=core.device), generator=core.generator)
        core.model.predict = lambda *args, **kwargs: out


def measure(dream_id: str, n: int, device: str, calls: int, repeats: int) -> dict[str, Any]:
    """One row: times (us per vector step) and aten calls for one N."""
    actions = np.zeros(n, dtype=np.int64)
    kwargs = {"device": device, "out_of_bounds": "clip"}  # no halts: every row steps every call
    checkpoint = gym.spec(dream_id).kwargs["checkpoint"]
    core = DreamCore(checkpoint, num_envs=n, **kwargs)
    sync = torch.cuda.synchronize if core.device.type == "cuda" else (lambda: None)
    core.seed(np.random.default_rng(0))
    core.reset_rows()
    action_tensor = torch.zeros(n, dtype=torch.long, device=core.device)

    def predict() -> Any:
        if core.host:  # the numpy path the core takes for one CPU dream
            return core.model.predict_host(core.state.numpy(), actions, generator=core.host_rng, temperature=core.temperature)
        return core.model.predict(core.state, action_tensor, generator=core.generator, temperature=core.temperature)

    vector = gym.make_vec(dream_id, num_envs=n, **kwargs)
    vector.reset(seed=0)
    sb3 = make_vec_env(dream_id, n_envs=n, seed=0, monitor=False, **kwargs)
    sb3.reset()
    single = gym.make(dream_id, max_episode_steps=10**9, **kwargs) if n == 1 else None
    timed: dict[str, Callable[[], Any]] = {"predict": predict, "core.step": lambda: core.step(actions)}
    row: dict[str, Any] = {"N": n}
    for name, fn in timed.items():
        row[name] = best_microseconds(fn, calls, repeats, sync)
        row[f"{name} ops"] = aten_calls(fn)
    for name, env_core, step in [
        ("core", core, lambda: core.step(actions)),
        ("vector", vector.core, lambda: vector.step(actions)),
        ("sb3", sb3.core, lambda: sb3.step(actions)),
        ("single", single.unwrapped.core if single else None, (lambda: single.step(0)) if single else None),
    ]:
        if env_core is None:
            row[f"{name} - predict"] = None
            continue
        if name == "single":
            single.reset(seed=0)
        cache_predict(env_core)
        row[f"{name} - predict"] = best_microseconds(step, calls, repeats, sync)
        row[f"{name} - predict ops"] = aten_calls(step)
    return row


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dream-id", default="Dream-CartPole-v0")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/step_overhead.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [measure(args.dream_id, n, args.device, args.calls, args.repeats) for n in args.sizes]
    columns = ["predict", "core.step", "core - predict", "vector - predict", "sb3 - predict", "single - predict"]
    print("| N | " + " | ".join(f"{c} us (ops)" for c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for row in rows:
        cells = ["-" if row.get(c) is None else f"{row[c]:.0f} ({row[c + ' ops']:.0f})" for c in columns]
        print(f"| {row['N']} | " + " | ".join(cells) + " |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": args.device, "dream_id": args.dream_id, "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
