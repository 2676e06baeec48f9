"""Fuzzing and fault benchmark: what random steps, crafted checkpoints, corrupted data and killed
fits do to the package. Every count in the table should be 0.

    python benchmarks/robustness.py                  # full run: 10 million dream steps (run from the repo root)
    python benchmarks/robustness.py --quick          # smoke run, a minute or two
    python benchmarks/robustness.py --dream my.safetensors --quick   # fuzz given dreams, not the shipped ones

1. **Dream steps**: ``--steps`` random in-space actions in total, spread over every shipped dream
   (or ``--dream``) and a set of knob settings, extremes included (the largest temperature and
   penalty the knobs accept, disagreement halts, ``out_of_bounds="clip"``), through
   ``gym.make_vec(id, num_envs=4096)``. Counts NaN/inf observations, observations outside the
   observation space, NaN/inf rewards and raised exceptions.
2. **Crafted checkpoints**: each loaded (and where it applies rendered, evaluated or scanned) in a
   subprocess with a 5 s budget. Counts modules imported and files unpickled (planted payloads
   leave a marker file), hangs over 5 s, allocations over 1 GB (peak RSS growth), and failures
   that are not a ``CheckpointError``.
3. **Corrupted data files**: truncated, bit-flipped and crafted files through ``learned_envs.data.load``;
   counts anything but a ``DataError`` or a valid load.
4. **Killed fits**: ``learned-envs fit`` on small data, killed (SIGKILL) at random times over a
   valid earlier result; counts files left that do not load, and fits that exit 0 with a dream
   that does not load or holds non-finite values.

Prints a table and writes JSON (``--out``, default benchmarks/results/robustness.json).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.helpers holds the checkpoint rewriters the tests use too

HANG_S = 5.0
ALLOC_LIMIT_KB = 1 << 20  # 1 GB of peak RSS growth, in getrusage's kilobytes
DEEP = "[" * 100_000 + "]" * 100_000


# -- 1. dream steps ---------------------------------------------------------------------------
def knob_settings() -> dict[str, dict[str, Any]]:
    """Named ``gym.make_vec`` kwargs: defaults and the extremes the knobs accept."""
    from learned_envs.dream_settings import KNOB_LIMIT

    return {
        "default": {},
        "temperature max": {"temperature": KNOB_LIMIT},
        "penalty max": {"uncertainty_penalty": KNOB_LIMIT},
        "halt auto, reward -max": {"halt_threshold": "auto", "halt_factor": 0.5, "halt_reward": -KNOB_LIMIT},
        "halt tiny": {"halt_threshold": 1e-12, "halt_reward": KNOB_LIMIT},
        "clip, margin max": {"out_of_bounds": "clip", "bounds_margin": KNOB_LIMIT},
        "fixed member, temperature 0": {"propagation": "fixed", "temperature": 0.0},
        "mean": {"propagation": "mean", "temperature": 2.0},
    }


def random_actions(space, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniformly random actions inside ``space`` (the dream refuses others, as it should)."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(space.start, space.start + space.n, size=n)
    return rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(space.dtype)


def fuzz_dream(dream_id: str, knobs: dict[str, Any], steps: int, num_envs: int, seed: int) -> dict[str, Any]:
    """Step ``num_envs`` dreams of ``dream_id`` under ``knobs`` for about ``steps`` env steps."""
    import gymnasium as gym

    counts = {"steps": 0, "nonfinite_obs": 0, "outside_obs": 0, "nonfinite_reward": 0, "exceptions": 0, "first_exception": None}
    try:
        env = gym.make_vec(dream_id, num_envs=num_envs, **knobs)
    except Exception as exc:  # noqa: BLE001  (a knob the dream refuses is a count, not a crash of the benchmark)
        counts.update(exceptions=1, first_exception=f"{type(exc).__name__}: {exc}"[:300])
        return counts
    space = env.single_observation_space
    low, high = space.low.reshape(-1), space.high.reshape(-1)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    while counts["steps"] < steps:
        try:
            obs, reward, _, _, _ = env.step(random_actions(env.single_action_space, rng, num_envs))
        except Exception as exc:  # noqa: BLE001
            counts["exceptions"] += 1
            counts["first_exception"] = counts["first_exception"] or f"{type(exc).__name__}: {exc}"[:300]
            obs, _ = env.reset()
            continue
        flat = obs.reshape(num_envs, -1)
        finite = np.isfinite(flat).all(axis=1)
        counts["nonfinite_obs"] += int((~finite).sum())
        counts["outside_obs"] += int((finite & ((flat < low) | (flat > high)).any(axis=1)).sum())
        counts["nonfinite_reward"] += int((~np.isfinite(reward)).sum())
        counts["steps"] += num_envs
    env.close()
    return counts


# -- 2. crafted checkpoints -----------------------------------------------------------------------
def crafted_checkpoints(base: Path, folder: Path, planted: dict[str, Path]) -> dict[str, tuple[Path, str]]:
    """``name -> (file, action)`` for every crafted case; ``action`` is what the child does with it."""
    from tests.helpers import rewrite_metadata, rewrite_tensors

    def meta(name: str, edit: Callable[[dict], Any]) -> Path:
        return rewrite_metadata(base, folder / f"{name}.safetensors", edit, digest="restamp")

    def tensors(name: str, tensor: str, value: float) -> Path:
        def edit(t):
            t[tensor].reshape(-1)[0] = value
        return rewrite_tensors(base, folder / f"{name}.safetensors", edit)

    bait = folder / "bait.pkl"
    bait.write_bytes(pickle.dumps(_Planted(planted["unpickle"])))
    from learned_envs.data import source_sha256

    def config(**values):
        return lambda m: m["model"]["config"].update(values)

    raw = base.read_bytes()
    (header_len,) = np.frombuffer(raw[:8], dtype="<u8")
    truncated = folder / "truncated.safetensors"
    truncated.write_bytes(raw[: len(raw) // 2])
    flips = {}
    for where, offset in (("header", 8 + int(header_len) // 2), ("tensors", 8 + int(header_len) + (len(raw) - 8 - int(header_len)) // 2)):
        flipped = bytearray(raw)
        flipped[offset] ^= 0x10
        flips[where] = folder / f"flipped_{where}.safetensors"
        flips[where].write_bytes(bytes(flipped))
    return {
        "num_layers 200000": (meta("layers", config(num_layers=200_000)), "load"),
        "hidden_size 30000": (meta("hidden", config(hidden_size=30_000)), "load"),
        "ensemble_size 10**9": (meta("members", config(ensemble_size=10**9)), "load"),
        "NaN start state": (tensors("nan_start", "start_states", float("nan")), "load"),
        "NaN weight": (tensors("nan_weight", "model.input_norm.mean", float("nan")), "load"),
        "zero std": (tensors("zero_std", "model.input_norm.std", 0.0), "load"),
        "module:Env source id": (meta("colon", lambda m: m.update(source_env_id="planted_robustness:Evil-v0")), "render"),
        "pickle dataset path": (meta("pickle", lambda m: m["dataset"].update(path=str(bait), sha256=source_sha256(bait))
                                     or m["fit"].update(holdout_episodes=[0])), "evaluate"),
        "module:Env dream id": (meta("dream_id", lambda m: m["dream"].update(id="planted_robustness:Dream-v0")), "scan"),
        "nested JSON": (rewrite_metadata(base, folder / "deep.safetensors", lambda m: DEEP), "load"),
        "Discrete n Infinity": (meta("inf_n", lambda m: m["action_space"].update(n=float("inf"))), "load"),
        "max_train_disagreement NaN": (meta("nan_metric", lambda m: m["fit"].setdefault("metrics", {})
                                            .update(max_train_disagreement=float("nan"))), "load"),
        "truncated": (truncated, "load"),
        "bit flip in header": (flips["header"], "load"),
        "bit flip in tensors": (flips["tensors"], "load"),
    }


class _Planted:
    """Unpickling this creates its marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def child(spec: dict[str, Any]) -> None:
    """In a fresh process: do ``spec["action"]`` with ``spec["path"]``, print the outcome as JSON."""
    import torch

    torch.set_num_threads(1)
    from learned_envs.checkpoint import CheckpointError, load_checkpoint

    sys.path.insert(0, spec["plant_dir"])  # where the planted module lives, as if installed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    outcome, message = "accepted", ""
    try:
        if spec["action"] == "load":
            load_checkpoint(spec["path"])
        elif spec["action"] == "render":
            from learned_envs.dreams.env import DreamEnv

            env = DreamEnv(spec["path"], render_mode="rgb_array")
            env.reset(seed=0)
            env.render()
        elif spec["action"] == "evaluate":
            from learned_envs.evaluation.sources import load_eval_data, resolve

            load_eval_data(resolve(spec["path"]), None)
        elif spec["action"] == "scan":
            import warnings

            from learned_envs.registry import _register_folder

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _register_folder(Path(spec["path"]).parent, "user")
            if any("skipping dream" in str(w.message) for w in caught):
                outcome, message = "refused", str(caught[0].message)[:300]
    except (CheckpointError, NotImplementedError, ValueError) as exc:  # the named refusals of each face
        outcome, message = "refused", f"{type(exc).__name__}: {exc}"[:300]
    except Exception as exc:  # noqa: BLE001
        outcome, message = "raw exception", f"{type(exc).__name__}: {exc}"[:300]
    seconds = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"outcome": outcome, "message": message, "rss_growth_kb": grown, "seconds": round(seconds, 2)}))


def run_crafted(base: Path, work: Path) -> list[dict[str, Any]]:
    plant_dir = work / "plant"
    plant_dir.mkdir()
    markers = {"import": work / "imported.marker", "unpickle": work / "unpickled.marker"}
    (plant_dir / "planted_robustness.py").write_text(f"open({str(markers['import'])!r}, 'w').close()\n")
    rows = []
    for name, (path, action) in crafted_checkpoints(base, work, markers).items():
        if action == "scan":  # alone in a folder, as the user's dream folder would hold it
            (work / "scan").mkdir(exist_ok=True)
            os.replace(path, work / "scan" / path.name)
            path = work / "scan" / path.name
        for marker in markers.values():
            marker.unlink(missing_ok=True)
        spec = {"path": str(path), "action": action, "plant_dir": str(plant_dir)}
        # The child times its action alone (its imports take seconds of their own); the timeout
        # here is the hard stop for a child that never returns.
        try:
            done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                                  timeout=HANG_S + 30, cwd=work, env={**os.environ, "OMP_NUM_THREADS": "1"})
            lines = done.stdout.strip().splitlines()
            result = json.loads(lines[-1]) if lines else {"outcome": "crashed", "message": done.stderr[-300:], "rss_growth_kb": 0,
                                                          "seconds": 0.0}
        except subprocess.TimeoutExpired:
            result = {"outcome": "hung", "message": f"killed after {HANG_S + 30:.0f} s", "rss_growth_kb": 0, "seconds": HANG_S + 30}
        rows.append({"case": name, "action": action, **result,
                     "imported": markers["import"].exists(), "unpickled": markers["unpickle"].exists()})
    return rows


# -- 3. corrupted data files ----------------------------------------------------------------------
def run_corrupted_data(work: Path) -> list[dict[str, Any]]:
    from learned_envs.data import DataError, collect, load, save

    good = collect("CartPole-v1", 200, seed=0, progress=False)
    npz = save(good, work / "good.npz")
    raw = npz.read_bytes()
    cases: dict[str, Path] = {}

    def write(name: str, data: bytes) -> None:
        cases[name] = work / name
        cases[name].write_bytes(data)

    write("truncated.npz", raw[: len(raw) // 2])
    rng = np.random.default_rng(0)
    for k in range(5):
        flipped = bytearray(raw)
        flipped[int(rng.integers(len(raw)))] ^= 1 << int(rng.integers(8))
        write(f"bitflip_{k}.npz", bytes(flipped))
    with open(work / "array.npz", "wb") as fh:
        np.save(fh, np.zeros(5))
    cases["npy named .npz"] = work / "array.npz"
    arrays = dict(np.load(npz))
    for name, change in {"nested metadata.npz": {"metadata": np.array(DEEP)},
                         "float64 past float32.npz": {"observations": good.observations.astype(np.float64) * 1e39},
                         "reward 1e30.npz": {"rewards": np.full(len(good), 1e30)},
                         "source_env_id 7.npz": {"metadata": np.array(json.dumps({"source_env_id": 7}))},
                         "pickled object array.npz": {"rewards": np.array([object()] * len(good), dtype=object)}}.items():
        cases[name] = work / name
        np.savez(cases[name], **{**arrays, **change})
    try:
        hdf5 = save(good, work / "good.hdf5")
        write("truncated.hdf5", hdf5.read_bytes()[: hdf5.stat().st_size // 2])
        minari = save(good, work / "minari_dataset")
        (minari / "data" / "metadata.json").write_text(DEEP)
        cases["minari nested metadata"] = minari
    except ImportError:
        pass  # h5py absent: the HDF5 and Minari cases are skipped
    rows = []
    for name, path in cases.items():
        try:
            load(path)
            outcome = "loaded"
        except DataError as exc:
            outcome, message = "refused", str(exc)[:200]
        except Exception as exc:  # noqa: BLE001
            outcome, message = "raw exception", f"{type(exc).__name__}: {exc}"[:200]
        rows.append({"case": name, "outcome": outcome, "message": message if outcome != "loaded" else ""})
    return rows


# -- 4. killed fits -------------------------------------------------------------------------------
def run_killed_fits(work: Path, kills: int, seed: int) -> list[dict[str, Any]]:
    from learned_envs.checkpoint import CheckpointError, load_checkpoint
    from learned_envs.data import collect

    data = work / "fit_data.npz"
    collect("CartPole-v1", 300, out=data, seed=seed, progress=False)
    target = work / "dream.safetensors"
    command = lambda s: [sys.executable, "-m", "learned_envs.cli", "fit", str(data), "--out", str(target),  # noqa: E731
                         "--hidden-size", "16", "--layers", "1", "--ensemble-size", "2", "--elites", "1", "--seed", str(s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def check(path: Path) -> str:
        if not path.exists():
            return "absent"
        try:
            ckpt = load_checkpoint(path)  # checks every value: finite weights, start states in space
        except CheckpointError as exc:
            return f"broken: {exc}"[:200]
        return "valid" if all(t.isfinite().all() for t in ckpt.model.state_dict().values()) else "non-finite"

    start = time.perf_counter()
    first = subprocess.run(command(seed), capture_output=True, text=True, env=env, cwd=work)
    full_s = time.perf_counter() - start
    rows = [{"run": "uninterrupted", "rc": first.returncode, "seconds": round(full_s, 2), "result": check(target)}]
    old = target.read_bytes() if target.exists() else None
    rng = np.random.default_rng(seed)
    for k in range(kills):
        delay = float(rng.uniform(0.05, 1.0) * full_s)
        proc = subprocess.Popen(command(seed + 1 + k), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=work,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        result = check(target)
        same = old is not None and target.exists() and target.read_bytes() == old
        rows.append({"run": f"killed at {delay:.1f} s", "rc": rc, "result": result, "kept_old": same,
                     "leftovers": sorted(p.name for p in work.glob(".dream.safetensors*"))})
        if result == "valid":
            old = target.read_bytes()
    return rows


# -- report ---------------------------------------------------------------------------------------
def shipped_dreams() -> list[str]:
    import learned_envs

    return [row["id"] for row in learned_envs.registered_dreams() if row["origin"] == "shipped"]


def dream_ids(given: list[str] | None) -> list[str]:
    """Registered ids for ``--dream`` entries (checkpoint paths get a temporary id), or the shipped dreams."""
    if not given:
        return shipped_dreams()
    from learned_envs import register_dream

    ids = []
    for k, item in enumerate(given):
        if Path(item).is_file():
            register_dream(f"Robustness{k}-v0", item)
            ids.append(f"Robustness{k}-v0")
        else:
            ids.append(item)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000_000, help="total random dream steps (default 10,000,000)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200,000 steps, 256 dreams per batch, 3 killed fits")
    parser.add_argument("--dream", action="append", help="dream id or checkpoint to fuzz (default: every shipped dream); repeatable")
    parser.add_argument("--num-envs", type=int, default=4096, help="dreams per batch (default 4096)")
    parser.add_argument("--kills", type=int, default=20, help="killed fits (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "robustness.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    import torch

    torch.set_num_threads(1)
    if args.quick:
        args.steps, args.num_envs, args.kills = min(args.steps, 200_000), min(args.num_envs, 256), min(args.kills, 3)

    ids, settings = dream_ids(args.dream), knob_settings()
    per_run = max(args.num_envs, args.steps // max(1, len(ids) * len(settings)))
    steps = []
    for dream_id in ids:
        for k, (label, knobs) in enumerate(settings.items()):
            counts = fuzz_dream(dream_id, knobs, per_run, args.num_envs, args.seed + k)
            steps.append({"dream": dream_id, "setting": label, **counts})
            print(f"  {dream_id:<34} {label:<28} {counts['steps']:>10,} steps  nonfinite obs {counts['nonfinite_obs']}  "
                  f"outside {counts['outside_obs']}  nonfinite reward {counts['nonfinite_reward']}  exceptions {counts['exceptions']}",
                  flush=True)

    with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
        work = Path(tmp)
        base = Path(__import__("gymnasium").spec(ids[0]).kwargs["checkpoint"]) if ids else None
        (work / "crafted").mkdir()
        crafted = run_crafted(base, work / "crafted") if base else []
        (work / "data").mkdir()
        data = run_corrupted_data(work / "data")
        (work / "fits").mkdir()
        fits = run_killed_fits(work / "fits", args.kills, args.seed)

    totals = {
        "dream steps": sum(r["steps"] for r in steps),
        "NaN/inf observations": sum(r["nonfinite_obs"] for r in steps),
        "observations outside the space": sum(r["outside_obs"] for r in steps),
        "NaN/inf rewards": sum(r["nonfinite_reward"] for r in steps),
        "exceptions while stepping": sum(r["exceptions"] for r in steps),
        "crafted checkpoints": len(crafted),
        "crafted: imported a module": sum(r["imported"] for r in crafted),
        "crafted: unpickled": sum(r["unpickled"] for r in crafted),
        f"crafted: hung > {HANG_S:.0f} s": sum(r["outcome"] == "hung" or r["seconds"] > HANG_S for r in crafted),
        "crafted: allocated > 1 GB": sum(r["rss_growth_kb"] > ALLOC_LIMIT_KB for r in crafted),
        "crafted: accepted or raw exception": sum(r["outcome"] != "refused" for r in crafted),  # every case is bad
        "corrupted data files": len(data),
        "data: raw exception": sum(r["outcome"] == "raw exception" for r in data),
        # A flipped bit may land where it changes nothing (a zip timestamp): loading that is right.
        "data: loaded a file it must refuse": sum(r["outcome"] == "loaded" and not r["case"].startswith("bitflip") for r in data),
        "fits killed": len(fits) - 1,
        "fits: file left that does not load": sum(r["result"].startswith(("broken", "non-finite")) for r in fits),
        "fits: exit 0 with a bad dream": sum(r["rc"] == 0 and r["result"] != "valid" for r in fits),
    }
    print("\n| count | value |\n|---|---:|")
    for key, value in totals.items():
        print(f"| {key} | {value:,} |")
    result = {"command": " ".join(sys.argv), "quick": args.quick, "totals": totals, "dream_steps": steps,
              "crafted": crafted, "data": data, "fits": fits}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
