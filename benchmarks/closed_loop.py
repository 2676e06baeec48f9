"""An agent in its dream and in the real env from the same start: where the two paths part.

``learned-envs evaluate`` replays logged actions open loop. An agent trained in a dream acts on the
dream's own predictions instead, and where the model errs in a direction the agent's policy pays
for, its real path and its dream path part even while every one-step error stays small. For each
agent and each of ``--episodes`` real resets (seeds ``--seed``, ``--seed`` + 1, ...), this runs:

- the real episode, the agent's deterministic action each step;
- the dream's closed loop from the same first observation, the agent's deterministic action on
  each dream observation: the ensemble mean (temperature 0), and ``--samples`` dreams at the
  checkpoint's temperature with a random member each step (as the agent was trained; ``--propagation
  fixed``: one member an episode); each until
  the learned end rule fires or ``--horizon`` steps, with no halt and no penalty (observations
  clipped to the data's box), so the model's own verdict on the policy shows;
- the members' disagreement one step ahead of each real state under the agent's real action,
  against the halt level the fit recorded at ``--halt-quantile`` (what a MOReL halt would see).

Prints and writes (JSON, ``--out``) each agent's mean real episode length beside the dream's (its
mean's, and its samples' median), and draws the first episode's chosen observation dimensions
and disagreement, one column per agent (``--plot``)::

    python benchmarks/closed_loop.py DREAM.safetensors --agents dream=agent.zip behaviour=behaviour.zip \\
        --episodes 5 --dims 0 1 --out runs/closed_loop.json --plot runs/closed_loop.png
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from learned_envs.data.collecting import load_sb3_agent
from learned_envs.dreams.core import DreamCore

# The dream's own verdict: its learned ends only, nothing the offline presets add to keep an agent near the data.
UNGUARDED = dict(out_of_bounds="clip", halt_threshold=None, support_halt=None, uncertainty_penalty=0.0)


def real_episode(agent: Any, env_id: str, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """One deterministic real episode: observations ``[T+1, D]``, actions ``[T, *act]``, return."""
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    observations, actions, total, done = [obs], [], 0.0, False
    while not done:
        action, _ = agent.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        total += float(reward)
        done = terminated or truncated
    env.close()
    return np.asarray(observations, dtype=np.float64), np.asarray(actions), total


def dream_closed_loop(core: DreamCore, agent: Any, first_obs: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The agent acting on N dreams (``core.num_envs``) from ``first_obs [D]``.

    Returns observations ``[N, horizon+1, D]`` (NaN after a dream's end) and each dream's end step
    ``[N]`` (``horizon`` where none came).
    """
    n = core.num_envs
    obs = core.reset_rows(initial_observations=first_obs[None])
    paths = np.full((n, horizon + 1, first_obs.size), np.nan)
    paths[:, 0] = obs.reshape(n, -1)
    ends = np.full(n, horizon)
    alive = np.ones(n, dtype=bool)
    for t in range(1, horizon + 1):
        action, _ = agent.predict(obs, deterministic=True)
        batch = core.step(action)
        obs = batch.observations
        paths[alive, t] = obs.reshape(n, -1)[alive]
        ended = alive & batch.terminated
        ends[ended] = t
        alive &= ~batch.terminated
        if not alive.any():
            break
    return paths, ends


def real_path_disagreement(probe: DreamCore, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """The members' disagreement one step ahead of each real state under its real action: ``[T]``."""
    out = np.empty(len(actions))
    for t, action in enumerate(actions):
        probe.reset_rows(initial_observations=observations[t][None])
        out[t] = probe.step(np.asarray(action)[None]).info["disagreement"][0]
    return out


def one_episode(agent: Any, env_id: str, seed: int, horizon: int, mean_core: DreamCore, sample_core: DreamCore,
                probe: DreamCore) -> dict[str, Any]:
    """One real episode from ``reset(seed=seed)``, the dream's closed loops from its first observation,
    and the disagreement along it: the arrays and their figures."""
    real, actions, real_return = real_episode(agent, env_id, seed)
    sample_core.seed(np.random.default_rng(seed))
    mean_path, mean_end = dream_closed_loop(mean_core, agent, real[0], horizon)
    sample_paths, sample_ends = dream_closed_loop(sample_core, agent, real[0], horizon)
    disagreement = real_path_disagreement(probe, real, actions)
    return {
        "real": real, "mean": mean_path[0], "samples": sample_paths, "disagreement": disagreement,
        "summary": {"seed": seed, "real_steps": len(actions), "real_return": real_return,
                    "dream_mean_steps": int(mean_end[0]), "dream_sample_steps": sample_ends.tolist(),
                    "real_path_disagreement_mean": float(disagreement.mean()),
                    "real_path_disagreement_max": float(disagreement.max()),
                    "real_path_share_above_halt": float((disagreement > probe.halt_threshold).mean())},
    }


def run_agent(checkpoint: Any, agent_path: str, env_id: str, seeds: list[int], samples: int, horizon: int,
              halt_quantile: float, propagation: str = "random") -> dict[str, Any]:
    """:func:`one_episode` for each reset seed; the first episode's arrays (for the plot) and a summary
    over all of them (means over episodes; the sampled dreams' lengths as their median)."""
    agent = load_sb3_agent(agent_path)
    mean_core = DreamCore(checkpoint, num_envs=1, temperature=0.0, **UNGUARDED)
    sample_core = DreamCore(checkpoint, num_envs=samples, propagation=propagation, **UNGUARDED)
    probe = DreamCore(checkpoint, num_envs=1, temperature=0.0, out_of_bounds="clip", uncertainty_penalty=0.0,
                      halt_threshold="auto", halt_quantile=halt_quantile, uncertainty_info=True)
    episodes = [one_episode(agent, env_id, seed, horizon, mean_core, sample_core, probe) for seed in seeds]
    rows = [e["summary"] for e in episodes]
    every_disagreement = np.concatenate([e["disagreement"] for e in episodes])
    summary = {
        "agent": agent_path, "episodes": len(rows), "horizon": horizon,
        "halt_level": float(probe.halt_threshold), "halt_quantile": halt_quantile,
        "real_steps": float(np.mean([r["real_steps"] for r in rows])),
        "real_return": float(np.mean([r["real_return"] for r in rows])),
        "dream_mean_steps": float(np.mean([r["dream_mean_steps"] for r in rows])),
        "dream_sample_steps_median": float(np.median([s for r in rows for s in r["dream_sample_steps"]])),
        "real_path_disagreement_mean": float(every_disagreement.mean()),
        "real_path_share_above_halt": float((every_disagreement > probe.halt_threshold).mean()),
        "per_episode": rows,
    }
    return {**episodes[0], "first": rows[0], "summary": summary}


def plot(path: Path, runs: dict[str, dict[str, Any]], dims: list[int], names: list[str]) -> Path:
    """One column per agent: each chosen dimension's real path, dream mean and dream samples, then
    the disagreement along the real path against the halt level."""
    from learned_envs.evaluation.plots import BAD, DREAM, MODEL, REAL, _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(len(dims) + 1, len(runs), figsize=(4.2 * len(runs) + 0.6, 1.9 * (len(dims) + 1) + 1),
                             sharex="col", squeeze=False)
    for c, (label, run) in enumerate(runs.items()):
        s, first = run["summary"], run["first"]
        for r, d in enumerate(dims):
            ax = axes[r, c]
            for i, sample in enumerate(run["samples"]):
                ax.plot(sample[:, d], color=DREAM, lw=0.6, alpha=0.5, label="dream samples, the agent acting" if i == 0 else None)
            ax.plot(run["mean"][:, d], color=MODEL, lw=1.4, ls="--", label="dream mean, the agent acting")
            ax.plot(run["real"][:, d], color=REAL, lw=1.6, label="real, the agent acting")
            ax.axvline(first["real_steps"], color=BAD, ls=":", lw=1.0, label="the real episode ends")
            ax.grid(True, alpha=0.25)
            if c == 0:
                ax.set_ylabel(names[d], fontsize=9)
        axes[0, c].set_title(f"{label}, reset seed {first['seed']}: real {first['real_steps']} steps "
                             f"(return {first['real_return']:.0f}),\ndream mean {first['dream_mean_steps']} steps", fontsize=9)
        ax = axes[-1, c]
        ax.plot(run["disagreement"], color=REAL, lw=1.0, label="disagreement one step ahead of the real path")
        ax.axhline(s["halt_level"], color=BAD, ls="--", lw=1.0, label=f"halt level ({s['halt_quantile']:g} quantile of training rows)")
        ax.grid(True, alpha=0.25)
        ax.set_xlabel("step")
        if c == 0:
            ax.set_ylabel("disagreement", fontsize=9)
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(text, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.04))
    fig.suptitle("An agent in its dream and in the real env, from the same first observation", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="the dream's .safetensors")
    parser.add_argument("--agents", nargs="+", required=True, metavar="LABEL=AGENT.zip", help="SB3 agents to compare")
    parser.add_argument("--env", default=None, help="the real env (default: the checkpoint's source env)")
    parser.add_argument("--seed", type=int, default=0, help="the first real episode's reset seed (each seeds its dream samples too)")
    parser.add_argument("--episodes", type=int, default=1, help="real episodes per agent, reset seeds SEED, SEED+1, ...; the plot draws the first")
    parser.add_argument("--samples", type=int, default=8, help="sampled dreams per agent")
    parser.add_argument("--horizon", type=int, default=None, help="most dream steps (default: the real episode's time limit)")
    parser.add_argument("--halt-quantile", type=float, default=0.99)
    parser.add_argument("--propagation", choices=["random", "fixed"], default="random",
                        help="the sampled dreams' members: a fresh one each step (as the presets train) or one an episode")
    parser.add_argument("--dims", type=int, nargs="+", default=[0], help="observation dimensions to draw")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/closed_loop.json"))
    parser.add_argument("--plot", type=Path, default=None, help="PNG (default: --out with .png)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a batch of a few dreams: one thread is fastest and leaves the other core free

    from learned_envs.checkpoint import load_checkpoint
    from learned_envs.evaluation.plots import obs_names

    checkpoint = load_checkpoint(args.checkpoint)  # once: each agent's three cores share it
    env_id = args.env or checkpoint.metadata.get("source_env_id")
    if env_id is None:
        parser.error(f"{args.checkpoint} records no source env: name the real one with --env")
    agents = dict(pair.split("=", 1) if "=" in pair else (Path(pair).stem, pair) for pair in args.agents)
    horizon = args.horizon or gym.spec(env_id).max_episode_steps or 1000
    seeds = list(range(args.seed, args.seed + args.episodes))
    runs = {label: run_agent(checkpoint, path, env_id, seeds, args.samples, horizon, args.halt_quantile, args.propagation)
            for label, path in agents.items()}
    for label, run in runs.items():
        s = run["summary"]
        print(f"{label}, {s['episodes']} episode(s): real {s['real_steps']:.0f} steps (return {s['real_return']:.1f}); "
              f"the dream's mean {s['dream_mean_steps']:.0f} steps, its samples a median {s['dream_sample_steps_median']:.0f} "
              f"(of {horizon}); disagreement on the real path: mean {s['real_path_disagreement_mean']:.3f}, above the "
              f"halt level {s['halt_level']:.3f} on {100 * s['real_path_share_above_halt']:.1f}% of steps")
    result = {"command": "python benchmarks/closed_loop.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "checkpoint": args.checkpoint, "env_id": env_id, "seeds": seeds,
              "agents": {label: run["summary"] for label, run in runs.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    names = obs_names(env_id, runs[next(iter(runs))]["real"].shape[1])
    drawn = plot(args.plot or args.out.with_suffix(".png"), runs, args.dims, names)
    print(f"wrote {args.out} and {drawn}")
    return result


if __name__ == "__main__":
    main()
