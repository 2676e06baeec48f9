"""What training in a dream does to the policy along the run: every checkpoint scored in the real env.

``learned-envs train`` hands back the last policy, and the benchmark scores only that. Where the
last policy disappoints, the question is when it went wrong: was the start (a preset's clone of the
logged behaviour) already poor, did the agent fall off it at release, or climb and fall back? This
trains SB3's agent in a dream fitted with a preset (its stored recipe, with the behaviour start's
knobs, the dreams' knobs and their time limit overridable by the same flags ``train`` takes:
``--anchor``, ``--actor-every``, ``--gamma``, ``--n-step``, ``--dream-kwarg``, ``--max-episode-steps``, ...), saves the policy every ``--every`` dream
steps, then scores each checkpoint over ``--episodes`` deterministic real episodes (D4RL's
normalised score where the source env has reference returns). With ``--judge DREAM``, each
checkpoint is also judged in that dream as ``train --select-judge whole`` judges (episodes from the
logged starts, the source env's time limit, no penalty and no halt; ``--judge-temperature 0`` for
the members' mean path), and the rank correlation between the dream's verdicts and the real scores
says whether choosing by that dream could pick the better policies. Writes JSON (``--out``) and a
plot of both against the steps (``--plot``)::

    python benchmarks/training_curve.py DREAM.safetensors --data LOGGED --steps 600000 --every 100000 \\
        --anchor 0.05 --anchor-beta 0 --workdir runs/curve --out runs/curve.json --plot runs/curve.png

Real episodes are used only to score, never to train or choose.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy

from learned_envs.checkpoint import read_metadata
from learned_envs.cli import parse_knobs
from learned_envs.data.collecting import load_sb3_agent
from learned_envs.evaluation.metrics import spearman
from learned_envs.evaluation.scores import normalized_score
from learned_envs.presets import stored_training
from learned_envs.registry import register_dream
from learned_envs.sb3 import make_vec_env
from learned_envs.training import evaluate_in_real, train_in_dream, whole_episode_judge

TRAIN_ID, JUDGE_ID = "Dream-TrainingCurve-v0", "Dream-TrainingCurveJudge-v0"


class SaveEvery(BaseCallback):
    """Save the agent to ``folder/ck_{steps}.zip`` each time the env steps cross a multiple of ``every``
    (a vectorised agent steps ``n_envs`` at a time, so a checkpoint's steps may overshoot by fewer than that)."""

    def __init__(self, folder: Path, every: int):
        super().__init__()
        self.folder, self.every, self.saved = folder, every, []

    def _on_step(self) -> bool:
        if self.num_timesteps // self.every > len(self.saved):
            path = self.folder / f"ck_{self.num_timesteps}.zip"
            self.model.save(path)
            self.saved.append((self.num_timesteps, path))
        return True


def judge_in_dream(model: BaseAlgorithm, episodes: int, seed: int, **knobs: Any) -> float:
    """Mean return of ``episodes`` deterministic whole episodes of ``model`` in the judge dream."""
    venv = make_vec_env(JUDGE_ID, n_envs=episodes, seed=seed, **{**whole_episode_judge(JUDGE_ID), **knobs})
    mean, _ = evaluate_policy(model, venv, n_eval_episodes=episodes, deterministic=True)
    venv.close()
    return float(mean)


def plot_title(result: dict[str, Any]) -> str:
    """The run a curve shows: its dream, seed and behaviour start."""
    start = result["behaviour_start"]
    held = "" if not start else f", anchor {start.get('anchor', 0):g}, beta {start.get('anchor_beta', 0):g}"
    return f"SAC in {Path(result['dream']).stem}, seed {result['seed']}{held}"


def plot_curve(rows: list[dict[str, Any]], title: str, path: Path) -> None:
    """Real score (or return) of each checkpoint against its steps, the judge dream's verdict on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["steps"] for row in rows]
    key = "score" if rows[0]["score"] is not None else "real_return"
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.errorbar(steps, [row[key] for row in rows], yerr=None if key == "score" else [row["real_std"] for row in rows],
                marker="o", label=f"real env ({'D4RL score' if key == 'score' else 'return'})")
    ax.set_xlabel("dream steps of training")
    ax.set_ylabel("D4RL normalised score" if key == "score" else "real return")
    if "dream_return" in rows[0]:
        twin = ax.twinx()
        twin.plot(steps, [row["dream_return"] for row in rows], marker="s", color="tab:orange", label="judge dream (return)")
        twin.set_ylabel("judge dream's return")
        fig.legend(loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.02))
        fig.subplots_adjust(bottom=0.22)
    ax.set_title(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dream", help="a dream checkpoint fitted with a preset (its recipe is what trains)")
    p.add_argument("--data", help="the logged data the recipe mixes in and clones (default: the one the dream records)")
    p.add_argument("--env", help="real env to score in (default: the dream's source env)")
    p.add_argument("--steps", type=int, help="dream steps to train (default: the recipe's)")
    p.add_argument("--every", type=int, required=True, help="save and score a checkpoint every this many dream steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the agent and its dreams")
    p.add_argument("--clone-behaviour", type=int, metavar="UPDATES", help="as train's (default: the recipe's)")
    p.add_argument("--hold-actor", type=int, metavar="STEPS", help="as train's (default: the recipe's)")
    p.add_argument("--anchor", type=float, metavar="ALPHA", help="as train's (default: the recipe's)")
    p.add_argument("--anchor-beta", type=float, metavar="BETA", help="as train's (default: the recipe's)")
    p.add_argument("--actor-every", type=int, metavar="K", help="as train's: after the hold, the actor learns on one vector "
                   "step in K (default 1)")
    p.add_argument("--gamma", type=float, help="as train's: the agent's discount factor (default: the recipe's)")
    p.add_argument("--n-step", type=int, help="as train's: the critic's targets this many dream steps ahead (default 1)")
    p.add_argument("--dream-kwarg", action="append", metavar="KNOB=VALUE", help="as train's: a dream knob for training")
    p.add_argument("--max-episode-steps", type=int, help="as train's: the training dreams' time limit (default: the dream's)")
    p.add_argument("--episodes", type=int, default=10, help="real episodes a checkpoint (reset seeds --eval-seed, +1, ...)")
    p.add_argument("--eval-seed", type=int, default=0)
    p.add_argument("--judge", metavar="DREAM", help="also judge each checkpoint in this dream checkpoint, whole episodes")
    p.add_argument("--judge-temperature", type=float, help="the judge dream's temperature (0: the members' mean path)")
    p.add_argument("--judge-episodes", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--workdir", type=Path, required=True, help="folder for the checkpoints")
    p.add_argument("--out", type=Path, help="JSON to write")
    p.add_argument("--plot", type=Path, help="PNG to write")
    args = p.parse_args(argv)
    if args.every < 1 or args.episodes < 1 or args.judge_episodes < 1:
        p.error("--every, --episodes and --judge-episodes must be >= 1")
    torch.set_num_threads(args.threads)

    register_dream(TRAIN_ID, args.dream)
    metadata = read_metadata(args.dream)
    env_id = args.env or metadata.get("source_env_id")
    if not env_id:
        p.error(f"{args.dream} records no source env: give --env")
    stored = stored_training(metadata)
    if stored is None:
        p.error(f"{args.dream} stores no training recipe: fit it with --preset")
    recipe, _ = stored
    # Unlike `train`, a flag here overrides only its own knob of the recipe's start, so one knob can be varied alone.
    given = {"clone_steps": args.clone_behaviour, "hold_steps": args.hold_actor, "anchor": args.anchor,
             "anchor_beta": args.anchor_beta, "actor_every": args.actor_every}
    start = {**(recipe.behaviour_start or {}), **{k: v for k, v in given.items() if v is not None}} or None
    args.workdir.mkdir(parents=True, exist_ok=True)
    saver = SaveEvery(args.workdir, args.every)
    knobs = parse_knobs(args.dream_kwarg, "--dream-kwarg")
    if args.max_episode_steps is not None:
        knobs["max_episode_steps"] = args.max_episode_steps
    model = train_in_dream(TRAIN_ID, args.steps, seed=args.seed, logged_data=args.data, behaviour_start=start,
                           callbacks=[saver], gamma=args.gamma, n_step=args.n_step, **knobs)
    final = args.workdir / "final.zip"
    model.save(final)
    # The policy train hands back is the one after learn() returns: SB3's off-policy agents take
    # their gradient steps after the callback, so a checkpoint saved at the same step count is older.
    checkpoints = [(steps, path) for steps, path in saver.saved if steps != model.num_timesteps]
    checkpoints.append((model.num_timesteps, final))

    judge_knobs = {} if args.judge_temperature is None else {"temperature": args.judge_temperature}
    if args.judge:
        register_dream(JUDGE_ID, args.judge)
    rows = []
    for steps, path in checkpoints:
        agent = load_sb3_agent(path)
        mean, std = evaluate_in_real(agent, env_id, args.episodes, args.eval_seed)
        row = {"steps": steps, "checkpoint": str(path), "real_return": mean, "real_std": std,
               "score": normalized_score(env_id, mean)}
        if args.judge:
            row["dream_return"] = judge_in_dream(agent, args.judge_episodes, seed=args.eval_seed, **judge_knobs)
        rows.append(row)
        shown = f"score {row['score']:.1f}" if row["score"] is not None else f"return {mean:.1f} +- {std:.1f}"
        print(f"{steps:>10,} steps: real {shown}" + (f"; judge dream {row['dream_return']:.1f}" if args.judge else ""),
              flush=True)
    result: dict[str, Any] = {"command": "python benchmarks/training_curve.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
                              "dream": args.dream, "env_id": env_id, "seed": args.seed, "behaviour_start": start,
                              "dream_kwargs": knobs, "gamma": args.gamma, "n_step": args.n_step,
                              "episodes": args.episodes, "rows": rows}
    if args.judge:
        rho, _ = spearman([r["real_return"] for r in rows], [r["dream_return"] for r in rows])
        result.update(judge=args.judge, judge_knobs=judge_knobs, rank_correlation=rho)
        print(f"rank correlation (Spearman), judge dream against real: {rho if rho is None else round(rho, 2)} "
              f"over {len(rows)} checkpoints")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_curve(rows, plot_title(result), args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
