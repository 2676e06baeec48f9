"""Offline RL at D4RL's yardstick: SB3 SAC trained only in a dream, beside d3rlpy's IQL, CQL and BC.

Datasets are made by D4RL's protocol on Gymnasium's v5 MuJoCo envs, each with package commands
(so a user can rebuild any of them), and written as Minari datasets:

    random        learned-envs collect ENV --steps ROWS --out DIR/ENV-random              (uniform policy)
    medium        learned-envs train ENV --algo SAC --steps M --stop-at-return R --out medium.zip --save-replay-buffer replay.pkl
                  (R: a third of the way from D4RL's random return to its expert's, normalised score 33.3)
                  learned-envs collect ENV --policy medium.zip --stochastic --steps ROWS --out DIR/ENV-medium
                  (--stochastic: the agent's sampled actions, as D4RL's reproducibility guide collects them;
                  its deterministic action alone logs a thin tube of states)
    medium-replay learned-envs merge replay.pkl --out DIR/ENV-medium-replay                (that agent's whole buffer)
    expert        learned-envs train ENV --algo SAC --steps E --out expert.zip; collect --policy expert.zip --stochastic
    medium-expert learned-envs merge DIR/ENV-medium DIR/ENV-expert --out DIR/ENV-medium-expert

Per env, dataset and seed, on the same data and the same number of gradient steps G:
- **dream + SAC**: ``learned-envs fit DATA --preset P --id ...`` then ``learned-envs train ID --steps S``
  (S env steps of the preset's recipe make G gradient steps; P ``offline`` on random data,
  ``offline-replay`` on medium-replay and ``offline-medium`` on the others, both of which start SAC
  from the anchored clone of the logged actions);
- **d3rlpy** 2.8.1 IQL, CQL and BC (installed for this benchmark only: ``pip install --no-deps
  d3rlpy==2.8.1 gym==0.26.2 structlog dataclasses-json colorama click scikit-learn``; it pins an
  older Gymnasium, which its offline training does not use);
- the behaviour policy's own score (the dataset's mean episode return).
Each policy is scored over real episodes with D4RL's normalised score (its reference returns).

    python benchmarks/offline_mujoco.py --envs HalfCheetah-v5 --datasets random --rows 100000 --grad-steps 20000 --seeds 0

Writes benchmarks/results/offline_mujoco.json, prints a table and draws it (``--plot``, a PNG).
With ``--workdir DIR`` a run can be cut short and started again: each learner's result is recorded
in ``DIR/results/`` (or ``--records DIR``) the moment it finishes, and a later run with the same
settings on the same rows (their SHA-256) reads it back instead of training it again. So a table
too long for one sitting, d3rlpy's CQL at hours a seed on a CPU, is made over several; with ``--records
benchmarks/results/offline_mujoco_records`` the records travel with the code to the next machine,
where a dataset rebuilt with the same contents picks them up (the random ones: ``collect --seed 1``;
the SAC-made ones repeat on the same kind of CPU, not across kinds).
Each learner prints when it starts and writes its progress to
``WORKDIR/logs/ENV-KIND-ALGO-seedSEED.log`` (the dream's ``fit`` and ``train`` output, d3rlpy's
updates every 5,000), each dataset's commands to ``WORKDIR/logs/NAME-KIND.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "offline_mujoco.json"
D3RLPY_ALGOS = ("IQL", "CQL", "BC")


def cli(*args: str, env: dict[str, str], log: Path) -> None:
    """``learned-envs ARGS`` as a user runs it, its output (progress bars included) appended to
    ``log``, where ``tail -f`` follows an hour-long fit or training; a failure raises with the log's end."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"$ learned-envs {' '.join(args)}\n")
        out.flush()
        done = subprocess.run([sys.executable, "-m", "learned_envs.cli", *args], env=env, stdout=out,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"learned-envs {' '.join(args)} failed (log: {log}):\n{log.read_text()[-3000:]}")


def build_dataset(env_id: str, kind: str, rows: int, medium_steps: int, workdir: Path, env: dict[str, str],
                  expert_steps: int = 1_000_000) -> Path:
    """The dataset ``kind`` of ``env_id`` (cached in ``workdir``), made with package commands only."""
    from learned_envs.evaluation.scores import reference_returns

    name = env_id.split("-v")[0].lower()
    out = workdir / f"{name}-{kind}"
    if out.exists():
        return out
    log = workdir / "logs" / f"{name}-{kind}.log"
    medium, replay = workdir / f"{name}-medium-agent.zip", workdir / f"{name}-medium-replay.pkl"
    if kind in ("medium", "medium-replay") and not medium.exists():
        # D4RL's medium policy: online SAC stopped at about a third of the expert's return.
        low, high = reference_returns(env_id)
        cli("train", env_id, "--algo", "SAC", "--steps", str(medium_steps), "--stop-at-return", f"{low + (high - low) / 3:.1f}",
            "--out", str(medium), "--save-replay-buffer", str(replay), env=env, log=log)
    if kind == "random":
        cli("collect", env_id, "--steps", str(rows), "--out", str(out), "--seed", "1", env=env, log=log)
    elif kind == "medium":
        cli("collect", env_id, "--policy", str(medium), "--stochastic", "--steps", str(rows), "--out", str(out), "--seed", "1",
            env=env, log=log)
    elif kind == "medium-replay":
        cli("merge", str(replay), "--out", str(out), env=env, log=log)
    elif kind == "expert":
        expert = workdir / f"{name}-expert-agent.zip"
        if not expert.exists():
            cli("train", env_id, "--algo", "SAC", "--steps", str(expert_steps), "--out", str(expert), env=env, log=log)
        cli("collect", env_id, "--policy", str(expert), "--stochastic", "--steps", str(rows), "--out", str(out), "--seed", "2",
            env=env, log=log)
    elif kind == "medium-expert":  # D4RL's: the medium and the expert datasets, concatenated
        parts = [build_dataset(env_id, part, rows, medium_steps, workdir, env, expert_steps) for part in ("medium", "expert")]
        cli("merge", *map(str, parts), "--out", str(out), env=env, log=log)
    else:
        raise ValueError(f"unknown dataset kind {kind!r}")
    return out


def score(policy, env_id: str, episodes: int, seed: int) -> float:
    """Mean real return of ``policy(obs) -> action`` over ``episodes`` episodes (seeds apart from any data's)."""
    from learned_envs.training import score_in_real

    return score_in_real(policy, env_id, episodes, seed=100_000 + 1000 * seed)[0]


def dream_sac(env_id: str, data: Path, tag: str, grad_steps: int, seed: int, episodes: int, env: dict[str, str],
              log: Path, fit_args: Sequence[str] = (), train_args: Sequence[str] = (), preset: str = "offline") -> dict:
    """Fit the dream with ``preset``, train the preset's SAC for ``grad_steps`` updates in it, score it.

    ``fit_args`` and ``train_args`` go on the ``fit`` and ``train`` command lines (e.g. a halt stored
    with ``--dream-default``, ``--value-penalty 1.5``)."""
    from stable_baselines3 import SAC

    from learned_envs.presets import get_preset

    recipe = get_preset(preset).training
    params = recipe.hyperparameters
    env_steps = grad_steps * params["n_envs"] // params["gradient_steps"] * params["train_freq"]
    dream_id = f"Dream-Bench{tag.title().replace('-', '')}-v{seed}"
    start = time.perf_counter()
    cli("fit", str(data), "--source-env", env_id, "--id", dream_id, "--preset", preset, "--seed", str(seed),
        "--threads", "1", *fit_args, env=env, log=log)
    fit_seconds = time.perf_counter() - start
    agent = Path(env["LEARNED_ENVS_HOME"]) / f"{dream_id}.zip"
    cli("train", dream_id, "--steps", str(env_steps), "--seed", str(seed), "--out", str(agent), *train_args, env=env, log=log)
    seconds = time.perf_counter() - start
    model = SAC.load(agent, device="cpu")
    value = score(lambda obs: model.predict(obs, deterministic=True)[0], env_id, episodes, seed)
    return {"return": value, "seconds": round(seconds, 1), "fit_seconds": round(fit_seconds, 1), "env_steps": env_steps,
            "preset": preset}


def d3rlpy_run(algo: str, env_id: str, data, grad_steps: int, seed: int, episodes: int, logdir: Path,
               log: Path | None = None) -> dict:
    """d3rlpy's ``algo`` with its MuJoCo reproduction settings, ``grad_steps`` updates on ``data``;
    a line every 5,000 updates, and d3rlpy's own messages, go to ``log`` if given."""
    import d3rlpy
    import torch

    d3rlpy.seed(seed)
    if algo == "IQL":  # d3rlpy/reproductions/offline/iql.py
        config = d3rlpy.algos.IQLConfig(actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256,
                                        weight_temp=3.0, max_weight=100.0, expectile=0.7,
                                        reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0))
    elif algo == "CQL":  # d3rlpy/reproductions/offline/cql.py
        encoder = d3rlpy.models.encoders.VectorEncoderFactory([256, 256, 256])
        config = d3rlpy.algos.CQLConfig(actor_learning_rate=1e-4, critic_learning_rate=3e-4, temp_learning_rate=1e-4,
                                        actor_encoder_factory=encoder, critic_encoder_factory=encoder, batch_size=256,
                                        n_action_samples=10, alpha_learning_rate=0.0, conservative_weight=5.0)
    else:
        config = d3rlpy.algos.BCConfig(batch_size=256)
    torch.set_num_threads(1)
    model = config.create(device="cpu:0")
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log, "a")) if log is not None else None
        if out is not None:
            stack.enter_context(contextlib.redirect_stdout(out))
            stack.enter_context(contextlib.redirect_stderr(out))
        ends = data.terminations | data.truncations
        ends[-1] = True
        # Built inside the redirect: d3rlpy reports the signatures it inferred, log lines for ``log``.
        dataset = d3rlpy.dataset.MDPDataset(
            observations=data.observations.astype(np.float32), actions=data.actions.astype(np.float32),
            rewards=data.rewards.astype(np.float32), terminals=data.terminations.astype(np.float32),
            timeouts=(ends & ~data.terminations).astype(np.float32))

        def progress(_, __, step: int) -> None:
            if step % 5000 == 0:
                print(f"{algo} seed {seed}: {step:,} / {grad_steps:,} updates, {time.perf_counter() - start:.0f} s",
                      file=out, flush=True)

        model.fit(dataset, n_steps=grad_steps, n_steps_per_epoch=grad_steps, show_progress=False, save_interval=10**9,
                  logger_adapter=d3rlpy.logging.FileAdapterFactory(root_dir=str(logdir)),
                  callback=progress if out is not None else None)
    seconds = time.perf_counter() - start
    value = score(lambda obs: model.predict(obs[None].astype(np.float32))[0], env_id, episodes, seed)
    return {"return": value, "seconds": round(seconds, 1)}


def run_learner(algo: str, env_id: str, kind: str, path: str, grad_steps: int, seed: int, episodes: int, workdir: str,
                env: dict[str, str], fit_args: Sequence[str] = (), train_args: Sequence[str] = (),
                preset: str = "offline") -> dict:
    """One learner on one dataset and seed (a worker process of the pool); the dream is fitted with
    ``preset``. Its progress goes to ``WORKDIR/logs/ENV-KIND-ALGO-seedSEED.log``."""
    from learned_envs.data import load

    log = learner_log(workdir, env_id, kind, algo, seed)
    log.parent.mkdir(parents=True, exist_ok=True)
    # One write (print writes the line and its end apart), so that workers starting together do not
    # interleave their lines.
    sys.stdout.write(f"{time.strftime('%H:%M:%S')} {env_id} {kind} seed {seed} {algo}: started, progress in {log}\n")
    sys.stdout.flush()
    if algo == "dream-SAC":
        return dream_sac(env_id, Path(path), f"{env_id.split('-v')[0]}-{kind}", grad_steps, seed, episodes, env, log,
                         fit_args, train_args, preset)
    return d3rlpy_run(algo, env_id, load(path), grad_steps, seed, episodes, Path(workdir) / "d3rlpy_logs", log)


def learner_log(workdir: str, env_id: str, kind: str, algo: str, seed: int) -> Path:
    """Where one learner's progress is written."""
    return Path(workdir) / "logs" / f"{env_id}-{kind}-{algo}-seed{seed}.log"


def dream_preset(kind: str, medium_preset: str, replay_preset: str) -> str:
    """The fit preset of the dream on a dataset of ``kind``: a random policy's data, a learning
    agent's whole buffer, or a competent controller's logs (every other kind)."""
    return {"random": "offline", "medium-replay": replay_preset}.get(kind, medium_preset)


def learner_settings(algo: str, preset: str, grad_steps: int, episodes: int, fit_args: Sequence[str],
                     train_args: Sequence[str], dataset: str) -> dict:
    """What a learner's result depends on beside its seed: a record made with other settings is
    trained again. ``dataset`` is the data's :func:`dataset_digest`. The dream's fit and train
    arguments and its preset concern it alone; the preset by what it stores, not only by name, so
    that a preset whose recipe has changed trains again."""
    settings = {"dataset_sha256": dataset, "grad_steps": grad_steps, "episodes": episodes}
    if algo == "dream-SAC":
        settings.update(fit_args=list(fit_args), train_args=list(train_args), preset=preset, recipe=preset_recipe(preset))
    return settings


def preset_recipe(name: str) -> dict:
    """What the preset ``name`` stores (its fit defaults and training recipe, not its description), as
    the plain JSON a record holds."""
    from learned_envs.presets import get_preset

    stored = dataclasses.asdict(get_preset(name))
    del stored["name"], stored["description"]
    return json.loads(json.dumps(stored))


def dataset_digest(data) -> str:
    """SHA-256 of a dataset's transitions, whatever file holds them (a Minari folder's metadata
    records when it was written): a record is read back only against the same rows, so a dataset
    rebuilt elsewhere with other contents (a medium agent trains differently from one machine to
    the next) trains every learner again."""
    digest = hashlib.sha256()
    for name in ("observations", "actions", "rewards", "next_observations", "terminations", "truncations"):
        array = np.ascontiguousarray(getattr(data, name))
        digest.update(f"{name} {array.dtype} {array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def recorded(record: Path, settings: dict) -> dict | None:
    """A learner's result that an earlier run recorded in ``record`` with the same ``settings``."""
    if not record.exists():
        return None
    saved = json.loads(record.read_text())
    return saved["result"] if saved.get("settings") == settings else None


def run_and_record(record: str, settings: dict, *args) -> dict:
    """:func:`run_learner` (``args``), its result written to ``record`` as soon as it is made (a
    worker process's own write, so a run cut short keeps every learner that finished)."""
    result = run_learner(*args)
    temporary = Path(record).with_suffix(".tmp")
    temporary.write_text(json.dumps({"settings": settings, "result": result,
                                     "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2))
    os.replace(temporary, record)
    return result


def behaviour_return(data) -> float:
    """Mean return of the dataset's complete episodes (the behaviour policy's own score)."""
    ends = np.flatnonzero(data.terminations | data.truncations)
    returns = [data.rewards[lo:hi + 1].sum() for lo, hi in zip(np.r_[0, ends[:-1] + 1], ends)]
    return float(np.mean(returns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5"])
    parser.add_argument("--datasets", nargs="+", default=["random", "medium", "medium-replay"])
    parser.add_argument("--rows", type=int, default=200_000, help="transitions per random/medium dataset")
    parser.add_argument("--medium-steps", type=int, default=1_000_000,
                        help="most real SAC steps of the medium behaviour agent (it stops at a third of the expert's return)")
    parser.add_argument("--expert-steps", type=int, default=1_000_000, help="real SAC steps of the expert (medium-expert)")
    parser.add_argument("--grad-steps", type=int, default=50_000, help="gradient steps of every learner")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=10, help="real episodes scoring each policy")
    parser.add_argument("--algos", nargs="+", default=["dream-SAC", *D3RLPY_ALGOS])
    parser.add_argument("--workdir", help="where datasets and runs go (default: a new temporary folder); reused if it exists: "
                        "its datasets, and each learner's result recorded there with the same settings, are kept")
    parser.add_argument("--records", help="where each learner's result is recorded as it finishes and read back by a "
                        "later run with the same settings on the same rows (default WORKDIR/results; "
                        "benchmarks/results/offline_mujoco_records keeps them with the code)")
    parser.add_argument("--jobs", type=int, default=1, help="learners trained at once, one process (and core) each")
    parser.add_argument("--out", default=str(RESULT))
    parser.add_argument("--plot", help="PNG of the scores: per env and dataset, each learner's mean as a bar, each "
                        "seed as a dot, the behaviour policy as a line (default: --out with .png)")
    parser.add_argument("--fit-args", default="", help='extra `learned-envs fit` arguments for the dream, one string '
                        '(e.g. "--dream-default halt_threshold=auto --dream-default halt_quantile=0.99")')
    parser.add_argument("--medium-preset", default="offline-medium",
                        help="fit preset of the dream on medium, expert and medium-expert data (a competent controller's)")
    parser.add_argument("--replay-preset", default="offline-replay",
                        help="fit preset of the dream on medium-replay data (a learning agent's whole buffer)")
    parser.add_argument("--train-args", default="", help='extra `learned-envs train` arguments for the dream\'s SAC, one '
                        'string (e.g. "--value-penalty 1.5 --clone-behaviour 20000 --anchor 2.5")')
    args = parser.parse_args()
    fit_args, train_args = shlex.split(args.fit_args), shlex.split(args.train_args)

    from learned_envs.data import load
    from learned_envs.evaluation.scores import normalized_score

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="offline_mujoco_"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LEARNED_ENVS_HOME": str(workdir / "home")}
    records = Path(args.records) if args.records else workdir / "results"
    records.mkdir(parents=True, exist_ok=True)
    rows = []
    for env_id in args.envs:
        for kind in args.datasets:
            start = time.perf_counter()
            path = build_dataset(env_id, kind, args.rows, args.medium_steps, workdir, env, args.expert_steps)
            data = load(path)
            build = time.perf_counter() - start
            behaviour, digest = behaviour_return(data), dataset_digest(data)
            preset = dream_preset(kind, args.medium_preset, args.replay_preset)
            # Every (seed, learner) is independent: --jobs of them at once, one core each. One that an
            # earlier run recorded with the same settings on the same rows is read back, not trained again.
            futures: dict[tuple[str, int], Future] = {}
            with ProcessPoolExecutor(args.jobs) as pool:
                for seed, algo in itertools.product(args.seeds, args.algos):
                    record = records / f"{env_id}-{kind}-{algo}-seed{seed}.json"
                    settings = learner_settings(algo, preset, args.grad_steps, args.episodes, fit_args, train_args, digest)
                    done = recorded(record, settings)
                    if done is not None:
                        futures[algo, seed] = Future()
                        futures[algo, seed].set_result({**done, "recorded": str(record)})
                        continue
                    futures[algo, seed] = pool.submit(run_and_record, str(record), settings, algo, env_id, kind, str(path),
                                                      args.grad_steps, seed, args.episodes, str(workdir), env, fit_args,
                                                      train_args, preset)
                for seed in args.seeds:
                    row = {"env": env_id, "dataset": kind, "rows": len(data), "seed": seed, "grad_steps": args.grad_steps,
                           "behaviour_return": behaviour, "behaviour_score": normalized_score(env_id, behaviour),
                           "dataset_seconds": round(build, 1)}
                    for algo in args.algos:
                        result = futures[(algo, seed)].result()
                        result["score"] = normalized_score(env_id, result["return"])
                        row[algo] = result
                        print(f"{env_id} {kind} seed {seed} {algo}: return {result['return']:.1f}, D4RL score "
                              f"{result['score']:.1f} ({result['seconds']} s{', recorded earlier' if 'recorded' in result else ''})",
                              flush=True)
                    rows.append(row)
                    Path(args.out).write_text(json.dumps({"command": "python benchmarks/offline_mujoco.py " + " ".join(sys.argv[1:]),
                                                          "rows": rows}, indent=2))
    print(table(rows, args.algos))
    if rows:
        print(f"plot: {plot(rows, args.algos, Path(args.plot) if args.plot else Path(args.out).with_suffix('.png'))}")


def by_dataset(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The rows (one per env, dataset and seed) grouped by ``(env, dataset)``, in first-seen order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["env"], row["dataset"]), []).append(row)
    return groups


def table(rows: list[dict], algos: list[str]) -> str:
    """Mean D4RL score over seeds per env and dataset, each learner beside the behaviour policy."""
    head = "| env | dataset | rows | grad steps | seeds | behaviour | " + " | ".join(algos) + " |"
    lines = [head, "|" + "---|" * (6 + len(algos))]
    for key, rs in by_dataset(rows).items():
        cells = []
        for algo in algos:
            scores = [r[algo]["score"] for r in rs]
            minutes = np.mean([r[algo]["seconds"] for r in rs]) / 60
            cells.append(f"{np.mean(scores):.1f} ± {np.std(scores):.1f} ({minutes:.0f} min)")
        lines.append(f"| {key[0]} | {key[1]} | {rs[0]['rows']:,} | {rs[0]['grad_steps']:,} | {len(rs)} | "
                     f"{rs[0]['behaviour_score']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], algos: list[str], path: Path) -> Path:
    """The table as a picture (:func:`learned_envs.evaluation.plots.plot_score_groups`)."""
    from learned_envs.evaluation.plots import plot_score_groups

    groups = [{"label": f"{env_id} {kind}, {rs[0]['rows']:,} rows, {len(rs)} seed{'s' * (len(rs) > 1)}",
               "scores": {algo: [r[algo]["score"] for r in rs] for algo in algos},
               "baseline": rs[0]["behaviour_score"]}
              for (env_id, kind), rs in by_dataset(rows).items()]
    return plot_score_groups(path, groups, f"trained offline, {rows[0]['grad_steps']:,} gradient steps each; "
                                           "scored over real episodes")


if __name__ == "__main__":
    main()
