"""``learned-envs``: a thin command-line face over the Python API.

    learned-envs collect ENV_ID --steps N --out FILE [--policy random|AGENT.zip] [--epsilon E] [--seed S]
    learned-envs fit DATA [--out FILE] [--id DREAM_ID] [--source-env ENV_ID] [--seed S]
    learned-envs list
    learned-envs demo [--steps N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable

from learned_envs.checkpoint import CheckpointError
from learned_envs.data.transitions import DataError


def cmd_collect(args: argparse.Namespace) -> None:
    from learned_envs.data.collecting import collect

    data = collect(args.env_id, args.steps, out=args.out, policy=args.policy, epsilon=args.epsilon, seed=args.seed, algo=args.algo)
    print(f"wrote {len(data)} transitions ({data.num_episodes} episodes) of {args.env_id} to {args.out}")


def cmd_fit(args: argparse.Namespace) -> None:
    from learned_envs.fitting import fit

    if args.out is None and args.id is None:
        raise SystemExit("learned-envs fit: give --out FILE, --id DREAM_ID, or both")
    path = fit(args.data, args.out, dream_id=args.id, source_env=args.source_env, seed=args.seed, max_episode_steps=args.max_episode_steps)
    from learned_envs.checkpoint import read_metadata

    meta = read_metadata(path)
    inferred = meta["dataset"].get("spaces_inferred")
    if inferred:
        print(f"note: inferred {', '.join(inferred)} from the data (no spaces in the file and no --source-env)")
    metrics = meta["fit"]["metrics"]
    print(
        f"wrote {path}: {meta['dataset']['transitions']} transitions, {meta['dataset']['episodes']} episodes, "
        f"holdout MSE {metrics['holdout_mse']:.3g}, termination recall {metrics.get('termination_holdout_recall', float('nan')):.2f}"
    )
    if args.id:
        from learned_envs.paths import user_dream_dir

        print(f"registered as {args.id} (in {user_dream_dir()}) at the next `import learned_envs`")


def cmd_list(args: argparse.Namespace) -> None:
    import learned_envs

    rows = learned_envs.registered_dreams()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    header = f"{'id':<32} {'origin':<8} {'source env':<26} {'transitions':>11} {'episodes':>8} {'holdout MSE':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        mse = f"{r['holdout_mse']:.3g}" if r["holdout_mse"] is not None else "-"
        print(f"{r['id']:<32} {r['origin']:<8} {str(r['source_env_id']):<26} {str(r['transitions']):>11} {str(r['episodes']):>8} {mse:>11}")


def cmd_demo(args: argparse.Namespace) -> None:
    import torch

    import learned_envs
    from learned_envs.checkpoint import read_metadata
    from learned_envs.training import evaluate_in_real, train_in_dream

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    spec = learned_envs.registry.gym.spec(args.dream)
    meta = read_metadata(spec.kwargs["checkpoint"])
    real_env, n_real = meta["source_env_id"], meta["dataset"]["transitions"]
    print(f"{args.dream}: a world model fitted on {n_real} logged transitions of {real_env} "
          f"(behaviour policy: {meta['dataset'].get('behaviour_policy', {}).get('kind', 'unknown')})")
    print(f"training PPO for {args.steps} steps only inside the dream ...")
    start = time.perf_counter()
    model = train_in_dream(args.dream, args.steps, "PPO", seed=args.seed)
    train_s = time.perf_counter() - start
    mean, std = evaluate_in_real(model, real_env, episodes=args.episodes, seed=args.seed + 10_000)
    print(f"\ntrained in the dream in {train_s:.0f} s; real {real_env} over {args.episodes} episodes: "
          f"mean return {mean:.1f} +- {std:.1f}")
    print(f"real transitions the dream was fitted on: {n_real}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="learned-envs", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="log transitions from a Gymnasium env")
    p.add_argument("env_id")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", required=True, help="output file (.npz)")
    p.add_argument("--policy", default="random", help="'random' or the path of a saved SB3 agent (.zip; trusted files only)")
    p.add_argument("--algo", default="auto", help="SB3 algorithm of --policy (default: read from the zip)")
    p.add_argument("--epsilon", type=float, default=0.0, help="share of uniformly random actions mixed into --policy")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("fit", help="fit a dream to logged data and write its checkpoint")
    p.add_argument("data", help="logged transitions (.npz)")
    p.add_argument("--out", help="checkpoint to write (.safetensors)")
    p.add_argument("--id", help="dream id (e.g. Dream-MyRobot-v0): also install it in the user's dream folder")
    p.add_argument("--source-env", help="Gymnasium id of the logged system (spaces, renderer, time limit)")
    p.add_argument("--max-episode-steps", type=int, help="dream time limit (default: the source env's)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("list", help="show every registered dream")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("demo", help="train PPO only in Dream-CartPole-v0 and score it in the real CartPole-v1")
    p.add_argument("--dream", default="Dream-CartPole-v0")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (DataError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"learned-envs {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
