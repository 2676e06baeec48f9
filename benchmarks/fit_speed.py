"""How fast does a dream fit, and how good is it? learned-envs' trainer beside mbrl-lib's, in one run.

Three parts (each can be skipped):

1. CartPole-v1, 1k and 5k uniform-random transitions: wall time of ``learned_envs.fitting.fit``
   (defaults) and of mbrl-lib 0.2.0's ``ModelTrainer`` with its MBPO defaults (7 x 200 x 4
   Gaussian ensemble, 5 elites, batch 256, lr 1e-3, weight decay 5e-5, patience 5 epochs,
   1% improvement), both on the same rows and the same torch thread count; held-out open-loop
   error err(k) at k = 1, 10, 50 (RMSE / data std, ensemble mean, logged actions replayed) on
   5,000 new random transitions and on 5,000 transitions of a noisy balancing policy (PPO trained
   30k real steps, epsilon 0.3), the data the README's fidelity table uses. mbrl-lib learns no
   termination (it takes a known function), so its time covers less work than ours.
2. The same 5k fit of ours while two other processes keep both cores busy: the slowdown.
3. Warm starts: CartPole-v1 and Pendulum-v1 dreams fitted on 1,000 random rows, then refitted
   from those weights (``fit(..., init=)``) after 1,000 more rows: the refit's wall time.
4. HalfCheetah-v5 (needs ``learned-envs[mujoco]``), 10k / 100k / 1M uniform-random rows:
   wall time and peak RSS of ``learned-envs fit`` in its own process, at ``--threads``.

    pip install --no-deps mbrl==0.2.0 hydra-core "omegaconf==2.3.0" "antlr4-python3-runtime==4.9.3" termcolor pyyaml
    python benchmarks/fit_speed.py                                   # everything (~40 min on 2 cores)
    python benchmarks/fit_speed.py --cheetah-rows 10000 --skip-load  # quicker

Writes benchmarks/results/fit_speed.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "fit_speed.json"
WORK = ROOT / "runs" / "fit_speed"
K = (1, 10, 50)


# -- held-out error, the same function for both models ---------------------------------------------
def open_loop_errors(model, heldout) -> dict[str, float | None]:
    from learned_envs.evaluation.metrics import data_std, open_loop_curve

    curve = open_loop_curve(model, heldout, data_std(heldout), horizon=max(K), progress=False)
    return {str(k): curve.at(k) for k in K}


class MbrlAsWorldModel(torch.nn.Module):
    """mbrl-lib's ``OneDTransitionRewardModel`` behind the calls ``open_loop_curve`` makes
    (``encode``/``decode``/``predict`` with the elites' mean), so both models are scored by one function."""

    def __init__(self, dynamics, action_dim: int):
        super().__init__()
        self.dynamics, self.action_dim = dynamics, action_dim

    def encode(self, obs):
        return obs

    def decode(self, state):
        return state

    @torch.no_grad()
    def predict(self, state, action, **_):
        from learned_envs.models.base import Prediction

        act = torch.nn.functional.one_hot(action.long().reshape(-1), self.action_dim).float()
        means, _ = self.dynamics.model.forward(self.dynamics._get_model_input(state, act), use_propagation=False)
        elites = list(self.dynamics.model.elite_models or range(means.shape[0]))
        mean = means[elites].mean(0)
        return Prediction(next_state=state + mean[:, :-1], reward=mean[:, -1], termination_prob=torch.zeros(len(state)),
                          disagreement=means[elites, :, :-1].std(0).norm(dim=-1))


def fit_mbrl(data, seed: int):
    """mbrl-lib 0.2.0's MBPO model and trainer defaults on ``data`` (one-hot actions)."""
    import mbrl.models as models
    import mbrl.util.common as common
    import omegaconf
    from mbrl.util.replay_buffer import ReplayBuffer

    n, obs_dim, n_act = len(data), data.observations.shape[1], int(data.action_space.n)
    actions = np.eye(n_act, dtype=np.float32)[data.actions.astype(np.int64)]
    torch.manual_seed(seed)
    ensemble = models.GaussianMLP(
        in_size=obs_dim + n_act, out_size=obs_dim + 1, device="cpu", num_layers=4, ensemble_size=7, hid_size=200,
        deterministic=False, propagation_method="random_model", learn_logvar_bounds=False,
        activation_fn_cfg=omegaconf.OmegaConf.create({"_target_": "torch.nn.SiLU"}),
    )
    dynamics = models.OneDTransitionRewardModel(ensemble, target_is_delta=True, normalize=True, normalize_double_precision=True,
                                                learned_rewards=True, num_elites=5)
    buffer = ReplayBuffer(n, (obs_dim,), (n_act,), rng=np.random.default_rng(seed))
    for i in range(n):
        buffer.add(data.observations[i], actions[i], data.next_observations[i], float(data.rewards[i]),
                   bool(data.terminations[i]), bool(data.truncations[i]))
    trainer = models.ModelTrainer(dynamics, optim_lr=1e-3, weight_decay=5e-5)
    overrides = omegaconf.OmegaConf.create({"model_batch_size": 256, "validation_ratio": 0.2, "patience": 5,
                                            "num_epochs_train_model": None, "bootstrap_permutes": False})
    common.train_model_and_save_model_and_data(dynamics, trainer, overrides, buffer, work_dir=None)
    return MbrlAsWorldModel(dynamics, n_act)


# -- part 1 and 2: CartPole ---------------------------------------------------------------------------
def heldout_sets(steps: int) -> dict[str, object]:
    from learned_envs.data.collecting import collect
    from learned_envs.training import train_in_real

    agent = WORK / "ppo_cartpole_real.zip"
    if not agent.exists():
        train_in_real("CartPole-v1", 30_000, "PPO", seed=0, progress=False).save(agent)
    return {
        "random": collect("CartPole-v1", steps, out=WORK / "heldout_random.npz", seed=123, progress=False),
        "ppo_eps0.3": collect("CartPole-v1", steps, out=WORK / "heldout_ppo_eps0.3.npz", policy=str(agent), epsilon=0.3,
                              seed=123, progress=False),
    }


def cartpole_rows(sizes: list[int], seed: int, skip_mbrl: bool) -> list[dict]:
    from learned_envs.checkpoint import load_checkpoint
    from learned_envs.data.collecting import collect
    from learned_envs.fitting import fit

    heldout = heldout_sets(5000)
    rows = []
    for size in sizes:
        path = WORK / f"cartpole_random_{size}.npz"
        data = collect("CartPole-v1", size, out=path, seed=1000 + seed, progress=False)
        start = time.perf_counter()
        ours = fit(path, WORK / f"ours_{size}.safetensors", source_env="CartPole-v1", seed=seed, progress=False)
        ours_s = time.perf_counter() - start
        model = load_checkpoint(ours).model
        row = {"rows": size, "ours_seconds": round(ours_s, 1),
               "ours_error": {name: open_loop_errors(model, held) for name, held in heldout.items()}}
        if not skip_mbrl:
            start = time.perf_counter()
            peer = fit_mbrl(data, seed)
            row["mbrl_seconds"] = round(time.perf_counter() - start, 1)
            row["mbrl_error"] = {name: open_loop_errors(peer, held) for name, held in heldout.items()}
            row["time_ratio_ours_over_mbrl"] = round(ours_s / row["mbrl_seconds"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def loaded_fit(size: int, seed: int, unloaded_seconds: float) -> dict:
    """Our fit of ``size`` rows while two busy processes hold both cores."""
    from learned_envs.fitting import fit

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        start = time.perf_counter()
        fit(WORK / f"cartpole_random_{size}.npz", WORK / f"ours_loaded_{size}.safetensors", source_env="CartPole-v1",
            seed=seed, progress=False)
        seconds = time.perf_counter() - start
    finally:
        for hog in hogs:
            hog.kill()
    return {"rows": size, "seconds": round(seconds, 1), "unloaded_seconds": unloaded_seconds,
            "slowdown": round(seconds / unloaded_seconds, 2)}


def warm_refits(seed: int) -> list[dict]:
    """A dream fitted on 1,000 random rows, then refitted warm-started (``init=``) after 1,000 more."""
    from learned_envs.data import concatenate
    from learned_envs.data.collecting import collect
    from learned_envs.fitting import fit

    rows = []
    for env_id in ("CartPole-v1", "Pendulum-v1"):
        first = collect(env_id, 1000, seed=2000 + seed, progress=False)
        more = collect(env_id, 1000, seed=3000 + seed, progress=False)
        base = WORK / f"warm_base_{env_id}.safetensors"
        start = time.perf_counter()
        fit(first, base, source_env=env_id, seed=seed, progress=False)
        cold_s = time.perf_counter() - start
        both = concatenate([first, more])
        start = time.perf_counter()
        fit(both, WORK / f"warm_refit_{env_id}.safetensors", source_env=env_id, seed=seed, init=base, progress=False)
        rows.append({"env": env_id, "first_fit_seconds": round(cold_s, 1), "warm_refit_seconds": round(time.perf_counter() - start, 1),
                     "rows_after": len(both)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# -- part 3: HalfCheetah at scale -------------------------------------------------------------------------
def cheetah_row(rows: int, threads: int, seed: int) -> dict:
    data = WORK / f"halfcheetah_random_{rows}.npz"
    if not data.exists():
        subprocess.run(["learned-envs", "collect", "HalfCheetah-v5", "--steps", str(rows), "--seed", str(seed), "--out", str(data)],
                       check=True, stdout=subprocess.DEVNULL)
    out = WORK / f"halfcheetah_{rows}.safetensors"
    # Its own process, so peak RSS is the fit's alone (data loading included).
    script = ("import resource, sys, time; from learned_envs.cli import main; t = time.perf_counter(); "
              f"rc = main(['fit', {str(data)!r}, '--out', {str(out)!r}, '--source-env', 'HalfCheetah-v5', '--threads', '{threads}']); "
              "print('RESULT', time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rc)")
    done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")][-1].split()
    from learned_envs.checkpoint import read_metadata

    fit_record = read_metadata(out)["fit"]
    row = {"rows": rows, "threads": threads, "seconds": round(float(line[1]), 1), "peak_rss_mb": round(int(line[2]) / 1024),
           "holdout_mse": fit_record["metrics"]["holdout_mse"], "updates": fit_record["history"].get("dynamics_updates", [None])[0]}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cartpole-sizes", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--cheetah-rows", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--cheetah-threads", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both CartPole fits")
    parser.add_argument("--skip-mbrl", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-warm", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["LEARNED_ENVS_HOME"] = tempfile.mkdtemp()
    WORK.mkdir(parents=True, exist_ok=True)

    result = {"command": "python " + " ".join([Path(sys.argv[0]).relative_to(ROOT).as_posix() if Path(sys.argv[0]).is_absolute() else sys.argv[0], *sys.argv[1:]]),
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__}}
    result["cartpole"] = cartpole_rows(args.cartpole_sizes, args.seed, args.skip_mbrl)
    if not args.skip_load and 5000 in args.cartpole_sizes:  # needs the unloaded 5k time of this run
        unloaded = next(r["ours_seconds"] for r in result["cartpole"] if r["rows"] == 5000)
        result["loaded"] = loaded_fit(5000, args.seed, unloaded)
        print(json.dumps(result["loaded"]), flush=True)
    result["warm_start"] = [] if args.skip_warm else warm_refits(args.seed)
    result["halfcheetah"] = [cheetah_row(rows, args.cheetah_threads, args.seed) for rows in args.cheetah_rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print_table(result)


def print_table(result: dict) -> None:
    fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    print("\nCartPole-v1 random data: fit seconds and held-out open-loop error k=1/10/50 (data std)")
    print(f"{'rows':>6} {'who':<10} {'seconds':>8} {'random k=1/10/50':>24} {'PPO eps0.3 k=1/10/50':>24}")
    for r in result["cartpole"]:
        for who in ("ours", "mbrl"):
            if f"{who}_seconds" not in r:
                continue
            e = r[f"{who}_error"]
            cells = ["/".join(fmt(e[name][str(k)]) for k in K) for name in ("random", "ppo_eps0.3")]
            print(f"{r['rows']:>6} {who:<10} {r[f'{who}_seconds']:>8} {cells[0]:>24} {cells[1]:>24}")
        if "time_ratio_ours_over_mbrl" in r:
            print(f"{'':>6} ours/mbrl time ratio {r['time_ratio_ours_over_mbrl']}")
    if "loaded" in result:
        lo = result["loaded"]
        print(f"5k fit with both cores loaded: {lo['seconds']} s vs {lo['unloaded_seconds']} s alone (x{lo['slowdown']})")
    for w in result["warm_start"]:
        print(f"{w['env']}: warm-started refit after 1,000 new rows ({w['rows_after']} in all): {w['warm_refit_seconds']} s "
              f"(the first fit of 1,000 rows: {w['first_fit_seconds']} s)")
    if result["halfcheetah"]:
        print("\nHalfCheetah-v5 random data: learned-envs fit")
        for r in result["halfcheetah"]:
            print(f"{r['rows']:>9} rows  {r['seconds']:>7} s  peak RSS {r['peak_rss_mb']:>6} MB  threads {r['threads']}  holdout MSE {fmt(r['holdout_mse'])}")


if __name__ == "__main__":
    main()
