"""Dream-to-real transfer: train an SB3 agent only in the dream under each setting of a sweep of
dream knobs, then score it both in the dream and in the real env it was logged from.

A dream that flatters the agent shows up as a high dream return beside a low real one.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import gymnasium as gym
import numpy as np

from learned_envs.evaluation.report import jsonable
from learned_envs.evaluation.sources import ensure_registered, resolve
from learned_envs.parallel import run_independent


def sweep_settings(sweep: dict[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    """Every combination of the swept knobs (``{}`` alone: the dream's defaults)."""
    if not sweep:
        return [{}]
    keys = list(sweep)
    for key in keys:
        if isinstance(sweep[key], (str, bytes)) or not isinstance(sweep[key], Iterable):
            raise ValueError(f"sweep[{key!r}] must be a list of values, got {sweep[key]!r}")
    return [dict(zip(keys, values)) for values in itertools.product(*(list(sweep[k]) for k in keys))]


def setting_label(setting: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in setting.items()) or "dream defaults"


def evaluate_in_dream(model, dream_id: str, episodes: int = 20, seed: int = 0, **dream_kwargs: Any) -> tuple[float, float]:
    """Mean and std of the return of ``episodes`` deterministic dream episodes, run side by side."""
    from learned_envs.sb3 import make_vec_env

    venv = make_vec_env(dream_id, n_envs=episodes, seed=seed, **dream_kwargs)
    obs = venv.reset()
    returns = np.zeros(episodes)
    finished = np.zeros(episodes, dtype=bool)
    while not finished.all():
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, dones, _ = venv.step(action)
        returns[~finished] += reward[~finished]
        finished |= dones
    venv.close()
    return float(returns.mean()), float(returns.std())


def train_and_score(
    checkpoint_or_dream_id: str,
    real_env: str,
    algo: str,
    steps: int,
    setting: dict[str, Any],
    seed: int,
    episodes: int,
    progress: bool = False,
) -> dict[str, Any]:
    """One agent of a sweep: train ``algo`` in the dream under ``setting``, score it in the dream and
    the real env. Runs in whatever process it is sent to, so it resolves the dream itself (a
    fresh worker has only what ``import learned_envs`` registers) and pins one torch thread."""
    import torch

    from learned_envs.training import evaluate_in_real, train_in_dream

    torch.set_num_threads(1)
    dream_id = ensure_registered(resolve(checkpoint_or_dream_id))
    start = time.perf_counter()
    model = train_in_dream(dream_id, steps, algo, seed=seed, progress=progress, **setting)
    train_s = time.perf_counter() - start
    dream_mean, _ = evaluate_in_dream(model, dream_id, episodes, seed=seed + 10_000, **setting)
    real_mean, _ = evaluate_in_real(model, real_env, episodes, seed=seed + 10_000)
    return {"seed": seed, "dream": dream_mean, "real": real_mean, "train_s": train_s}


def transfer(
    checkpoint_or_dream_id: str | os.PathLike,
    algo: str = "PPO",
    steps: int = 100_000,
    sweep: dict[str, Sequence[Any]] | None = None,
    seeds: int | Sequence[int] = 1,
    episodes: int = 20,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    verbose: bool = True,
    jobs: int = 1,
    ray: str | None = None,
) -> dict[str, Any]:
    """Train ``algo`` for ``steps`` only in the dream under every setting of ``sweep``
    (e.g. ``{"temperature": [0, 0.5, 1, 1.5]}``), once per seed, and score each agent over
    ``episodes`` deterministic episodes in the dream (same setting) and in the real env.

    ``seeds``: a count (seeds 0..K-1) or a list. ``jobs`` trains that many agents at once in local
    processes; ``ray`` (``"local"`` or a cluster address) trains each as a Ray task instead (see
    :func:`learned_envs.parallel.run_independent`). With ``out_dir``, writes ``transfer.json`` and
    ``transfer.png`` there. Returns the JSON dict; ``rows`` has one entry per setting.
    """
    from learned_envs.dream_settings import DreamSettings

    source = resolve(checkpoint_or_dream_id)
    real_env = source.source_env_id
    if not real_env or real_env not in gym.registry:
        raise ValueError(f"{source.path}: transfer needs the real env, but the checkpoint's source env id is {real_env!r}")
    settings = sweep_settings(sweep)
    for setting in settings:
        DreamSettings.resolve(source.metadata.get("dream", {}), setting)  # fail before any training
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("transfer needs at least one seed")
    # What a worker resolves again: the dream's id, or the absolute path of a bare checkpoint. (A
    # dream registered only in this process, by register_dream, reaches forked local workers but
    # not Ray's: give its checkpoint path for those.)
    dream_ref = source.dream_id or str(source.path)
    dream_id = ensure_registered(source)

    # Every (setting, seed) agent is independent: they run here, in a local pool or on Ray, and
    # come back in this order, so the table is the same whichever way they ran.
    show_progress = progress and jobs == 1 and ray is None  # bars from parallel workers would interleave
    calls = [(dream_ref, real_env, algo, steps, setting, seed, episodes, show_progress) for setting in settings for seed in seed_list]
    scores = run_independent(train_and_score, calls, jobs=jobs, ray_address=ray)
    rows = []
    for setting in settings:
        label = setting_label(setting)
        per_seed = [next(scores) for _ in seed_list]
        if verbose:
            for s in per_seed:
                print(f"  {label:<28} seed {s['seed']}: dream {s['dream']:7.1f}  real {s['real']:7.1f}  ({s['train_s']:.0f} s)")
        dream, real = np.array([s["dream"] for s in per_seed]), np.array([s["real"] for s in per_seed])
        rows.append(
            {
                "setting": setting,
                "label": label,
                "dream_return_mean": float(dream.mean()),
                "dream_return_std": float(dream.std()),
                "real_return_mean": float(real.mean()),
                "real_return_std": float(real.std()),
                "gap_mean": float((dream - real).mean()),
                "per_seed": per_seed,
            }
        )
    result = jsonable(
        {
            "checkpoint": str(source.path),
            "dream_id": dream_id,
            "source_env_id": real_env,
            "algo": algo.upper(),
            "steps": steps,
            "seeds": seed_list,
            "episodes": episodes,
            "sweep": sweep or {},
            "rows": rows,
        }
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "transfer.json").write_text(json.dumps(result, indent=2))
        from learned_envs.evaluation.plots import plot_transfer

        spec = gym.spec(real_env)
        title = (f"{algo.upper()} trained {steps:,} steps only in {source.name}, "
                 f"scored in both ({len(seed_list)} seed(s) x {episodes} episodes)")
        plot_transfer(out / "transfer.png", rows, title, spec.reward_threshold)
        result["files"] = {"json": "transfer.json", "plot": "transfer.png"}
    if verbose:
        print(format_transfer(result))
    return result


def format_transfer(result: dict[str, Any]) -> str:
    rows = result["rows"]
    width = max(24, *(len(r["label"]) for r in rows))
    lines = [
        f"{result['algo']} trained {result['steps']:,} steps only in {result['dream_id']}; "
        f"returns over {result['episodes']} episodes x {len(result['seeds'])} seed(s)",
        f"  {'setting':<{width}}  {'dream':>14}  {'real ' + result['source_env_id']:>18}  {'dream - real':>12}",
    ]
    for r in rows:
        dream = f"{r['dream_return_mean']:.1f} +- {r['dream_return_std']:.1f}"
        real = f"{r['real_return_mean']:.1f} +- {r['real_return_std']:.1f}"
        lines.append(f"  {r['label']:<{width}}  {dream:>14}  {real:>18}  {r['gap_mean']:>12.1f}")
    return "\n".join(lines)
