"""learned-envs: world models fitted on logged data, served as Gymnasium environments (dreams).

    learned-envs collect ENV_ID --steps N --out FILE [--format npz|minari|hdf5|sb3] [--policy random|pink|AGENT.zip]
        [--epsilon E] [--seed S]
    learned-envs merge DATA [DATA ...] --out FILE
    learned-envs fit DATA [--out FILE] [--id DREAM_ID] [--source-env ENV_ID] [--seed S]
    learned-envs list
    learned-envs train ENV_OR_DREAM_ID --algo PPO|A2C|DQN|SAC --steps N --out AGENT.zip [--seed S] [--dream-kwarg K=V]
        [--max-episode-steps N]
    learned-envs score AGENT.zip ENV_OR_DREAM_ID [--episodes N] [--seed S] [--json]
    learned-envs demo [--steps N] [--seed S]
    learned-envs loop ENV_ID --agent SAC|PPO|DQN --real-steps N --out DIR [--seed S]
    learned-envs evaluate CHECKPOINT_OR_DREAM_ID [--data FILE] [--out DIR] [--horizon K]
                          [--transfer ALGO --steps N --sweep temperature=0,0.5,1,1.5 --seeds K [--jobs J] [--ray ADDRESS]]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Callable

import gymnasium as gym

from learned_envs.checkpoint import CheckpointError
from learned_envs.data.transitions import DataError
from learned_envs.presets import PRESETS


def cmd_collect(args: argparse.Namespace) -> None:
    from learned_envs.data.collecting import collect

    data = collect(args.env_id, args.steps, out=args.out, policy=args.policy, epsilon=args.epsilon, seed=args.seed, algo=args.algo,
                   format=args.format, stochastic=args.stochastic)
    print(f"wrote {len(data)} transitions ({data.num_episodes} episodes) of {args.env_id} to {args.out}")


def cmd_merge(args: argparse.Namespace) -> None:
    from pathlib import Path

    from learned_envs.data import concatenate, load, save

    parts = [load(source) for source in args.data]
    merged = concatenate(parts, source=args.out, labels=[Path(str(source)).name for source in args.data])
    save(merged, args.out, format=args.format)
    print(f"wrote {len(merged)} transitions ({merged.num_episodes} episodes, {int(merged.terminations.sum())} ending in termination) "
          f"from {len(parts)} logs to {args.out}")


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    import learned_envs
    from learned_envs.training import SelectInDream, StopAtReturn, train_in_dream, train_in_real, whole_episode_judge

    torch.set_num_threads(args.threads)
    knobs = parse_knobs(args.dream_kwarg, "--dream-kwarg")
    if args.algo is not None:
        _check_algo_fits(args.algo, args.env_id)
    dream = learned_envs.registry.gym.spec(args.env_id).entry_point == learned_envs.registry.ENTRY_POINT
    if dream and args.stop_at_return is not None:
        raise ValueError("--stop-at-return is for training in a real env (it plays real episodes to check)")
    if dream:
        horizon = {} if args.max_episode_steps is None else {"max_episode_steps": args.max_episode_steps}
        if args.clone_behaviour is None and (args.hold_actor is not None or args.anchor is not None or args.anchor_beta is not None
                                             or args.actor_every is not None):
            raise ValueError("--hold-actor, --anchor, --anchor-beta and --actor-every shape a behaviour start: give "
                             "--clone-behaviour UPDATES too")
        # Options left unset fall to BehaviourStart's own defaults, which the help text quotes.
        given = {"clone_steps": args.clone_behaviour, "hold_steps": args.hold_actor, "anchor": args.anchor,
                 "anchor_beta": args.anchor_beta, "actor_every": args.actor_every}
        start = None if args.clone_behaviour is None else {k: v for k, v in given.items() if v is not None}
        if args.select_judge is not None and not args.select_every:
            raise ValueError("--select-judge says how --select-every judges: give --select-every STEPS too")
        judge = whole_episode_judge(args.env_id) if args.select_judge == "whole" else horizon
        select = SelectInDream(args.env_id, args.select_every, **{**knobs, **judge}) if args.select_every else None
        model = train_in_dream(args.env_id, args.steps, args.algo, seed=args.seed, logged_data=args.logged_data,
                               behaviour_start=start, callbacks=[select] if select else (),
                               value_penalty=args.value_penalty, gamma=args.gamma, n_step=args.n_step, **knobs, **horizon)
        if select is not None:
            steps, mean = select.chosen
            print(f"--select-every: kept the policy of step {steps:,} (mean dream return {mean:.1f} over "
                  f"{select.episodes} episodes; {len(select.history)} checks, the last {select.history[-1][1]:.1f})")
    elif (knobs or args.logged_data or args.max_episode_steps is not None or args.clone_behaviour is not None
          or args.hold_actor is not None or args.anchor is not None or args.anchor_beta is not None
          or args.actor_every is not None or args.select_every or args.select_judge is not None or args.value_penalty is not None
          or args.gamma is not None or args.n_step is not None):
        raise ValueError(f"--dream-kwarg, --logged-data, --max-episode-steps, --clone-behaviour (with --hold-actor, --anchor, "
                         f"--anchor-beta, --actor-every), --select-every (with --select-judge), --value-penalty, --gamma and "
                         f"--n-step are for dreams; {args.env_id} is not a registered dream")
    elif args.steps is None:
        raise ValueError(f"--steps is required to train in the real env {args.env_id}")
    else:
        stop = StopAtReturn(args.env_id, args.stop_at_return, every=args.check_every) if args.stop_at_return is not None else None
        model = train_in_real(args.env_id, args.steps, args.algo or "PPO", seed=args.seed, stop=stop)
        if stop is not None and stop.stopped_at:
            steps, mean = stop.stopped_at
            print(f"--stop-at-return: stopped at {steps} steps, mean return {mean:.1f} >= {args.stop_at_return:g} "
                  f"over {stop.episodes} deterministic episodes")
        elif stop is not None:
            last = f"last check: {stop.history[-1][1]:.1f}" if stop.history else "no check ran"
            print(f"--stop-at-return: never reached {args.stop_at_return:g} ({last})")
    # The agent alone: a dream recipe's buffer arguments hold the logged transitions and the dream's
    # path, which would bloat the zip and make loading it rebuild (or fail to find) them.
    model.save(args.out, exclude=["replay_buffer_class", "replay_buffer_kwargs"])
    print(f"wrote {type(model).__name__} agent trained {model.num_timesteps} steps in {args.env_id} to {args.out}")
    if args.save_replay_buffer:
        if not hasattr(model, "save_replay_buffer"):
            raise ValueError(f"--save-replay-buffer: {type(model).__name__} is on-policy and keeps no replay buffer")
        model.save_replay_buffer(args.save_replay_buffer)
        print(f"wrote its replay buffer ({model.replay_buffer.size() * model.n_envs} transitions) to {args.save_replay_buffer}")


# SB3 algorithms by the action spaces they can act in.
ALGOS = {"PPO": "any", "A2C": "any", "DQN": "Discrete", "SAC": "Box", "TD3": "Box", "DDPG": "Box"}


def _check_algo_fits(algo: str, env_id: str) -> None:
    """A ``ValueError`` naming ``--algo`` when ``algo`` cannot act in ``env_id``'s action space
    (SB3 itself ends in a bare ``AssertionError`` deep inside the model's constructor)."""
    from learned_envs.registry import ENTRY_POINT

    needs = ALGOS[algo]
    if needs == "any":
        return
    spec = gym.spec(env_id)
    if spec.entry_point == ENTRY_POINT:  # a dream: its header says, no weights loaded
        from learned_envs.checkpoint import read_metadata
        from learned_envs.data.spaces import space_from_json

        space = space_from_json(read_metadata(spec.kwargs["checkpoint"])["action_space"])
    else:
        env = gym.make(env_id)
        space, _ = env.action_space, env.close()
    if type(space).__name__ != needs:
        kind = "a continuous (Box)" if needs == "Box" else "a discrete (Discrete)"
        raise ValueError(f"--algo {algo} needs {kind} action space, but {env_id} has {space}; "
                         f"use {'PPO, A2C or DQN' if needs == 'Box' else 'PPO, A2C, SAC, TD3 or DDPG'}")


def parse_knobs(items: list[str] | None, flag: str) -> dict:
    """``["out_of_bounds=clip"]`` -> ``{"out_of_bounds": "clip"}``: dream knobs, one value each."""
    knobs = {}
    for key, values in parse_sweep(items or [], flag).items():
        if len(values) != 1:
            raise ValueError(f"{flag} {key}: one value, not {values}")
        knobs[key] = values[0]
    return knobs


def cmd_fit(args: argparse.Namespace) -> None:
    import dataclasses

    from learned_envs.fitting import FitConfig, fit

    if args.out is None and args.id is None:
        raise ValueError("give --out FILE, --id DREAM_ID, or both")
    config = FitConfig()
    sizes = {k: v for k, v in (("ensemble_size", args.ensemble_size), ("hidden_size", args.hidden_size),
                                ("num_layers", args.layers)) if v is not None}
    options = {k: v for k, v in (("num_elites", args.elites), ("device", args.device), ("threads", args.threads),
                                  ("max_updates", args.max_updates), ("max_seconds", args.max_seconds),
                                  ("batch_size", args.batch_size)) if v is not None}
    from learned_envs.models import EnsembleConfig

    config = dataclasses.replace(config, model=EnsembleConfig(**sizes) if sizes else None, **options)
    defaults = parse_knobs(args.dream_default, "--dream-default")
    path = fit(args.data, args.out, dream_id=args.id, source_env=args.source_env, seed=args.seed, init=args.init,
               max_episode_steps=args.max_episode_steps, config=config, dream_defaults=defaults,
               reset_states=args.reset_states, preset=args.preset, end_limits=args.end_limit or ())
    from learned_envs.checkpoint import read_metadata

    meta = read_metadata(path)
    inferred = meta["dataset"].get("spaces_inferred")
    if inferred:
        print(f"note: inferred {', '.join(inferred)} from the data (no spaces in the file and no --source-env)")
    metrics = meta["fit"]["metrics"]
    if metrics.get("termination_positives"):
        termination = f"termination recall {metrics.get('termination_holdout_recall', float('nan')):.2f}"
    else:
        termination = "no terminal rows in the data, so the dream ends episodes only at the time limit or on a halt"
    print(f"wrote {path}: {meta['dataset']['transitions']} transitions, {meta['dataset']['episodes']} episodes, "
          f"holdout MSE {metrics['holdout_mse']:.3g}; {termination}")
    if args.id:
        from learned_envs.paths import user_dream_dir

        print(f"registered as {args.id} (in {user_dream_dir()}) at the next `import learned_envs`")


def cmd_score(args: argparse.Namespace) -> None:
    import learned_envs  # noqa: F401  (registers the dreams, so a dream id names its real env)
    from learned_envs.data.collecting import load_sb3_agent
    from learned_envs.evaluation.scores import normalized_score
    from learned_envs.registry import source_env_of
    from learned_envs.training import evaluate_in_real

    real_env = source_env_of(args.env_id) or args.env_id
    agent = load_sb3_agent(args.agent, args.algo)
    mean, std = evaluate_in_real(agent, real_env, episodes=args.episodes, seed=args.seed)
    normalized = normalized_score(real_env, mean)
    row = {"agent": str(args.agent), "env_id": real_env, "episodes": args.episodes, "seed": args.seed,
           "return_mean": mean, "return_std": std, "d4rl_normalized": normalized}
    if args.json:
        print(json.dumps(row))
        return
    line = f"{args.agent} in the real {real_env}, {args.episodes} deterministic episodes: return {mean:.1f} +- {std:.1f}"
    print(line + (f"; D4RL normalised score {normalized:.1f}" if normalized is not None else ""))


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


def cmd_loop(args: argparse.Namespace) -> None:
    import torch

    from learned_envs.online import LoopConfig, run_loop

    torch.set_num_threads(1)  # small networks: a second thread costs more in sync than it saves
    config = LoopConfig(env_id=args.env_id, agent=args.agent, real_steps=args.real_steps, seed=args.seed,
                        initial_steps=args.initial_steps, noise=args.noise, iterations=args.iterations,
                        agent_steps_per_iteration=args.agent_steps, explorer_steps_per_iteration=args.explorer_steps,
                        eval_episodes=args.eval_episodes,
                        dream_check_episodes=args.dream_check_episodes, explore_fraction=args.explore_fraction,
                        explorer=args.explorer,
                        dream_kwargs=parse_knobs(args.dream_default, "--dream-default"))
    result = run_loop(config, args.out)
    last = result["curve"][-1] if result["curve"] else None
    if last:
        print(f"{args.env_id}: real return {last['return']:.1f} +- {last['return_std']:.1f} over {last['eval_episodes']} episodes "
              f"after {last['real_steps']} real steps; wrote {args.out}/real.npz, agent.zip, dream.safetensors, curve.json, curve.png")


def cmd_demo(args: argparse.Namespace) -> None:
    import torch

    import learned_envs  # noqa: F401  (registers the shipped dreams)
    from learned_envs.checkpoint import read_metadata
    from learned_envs.training import evaluate_in_real, train_in_dream

    torch.set_num_threads(1)  # small networks: a second thread costs more in sync than it saves
    meta = read_metadata(gym.spec(args.dream).kwargs["checkpoint"])
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


def parse_sweep(items: list[str], flag: str = "--sweep") -> dict[str, list]:
    """``["temperature=0,0.5,1", "propagation=random,mean"]`` -> ``{"temperature": [0.0, 0.5, 1.0], ...}``;
    errors name ``flag``, the option the items came from."""
    from learned_envs.dream_settings import DreamSettings

    known = DreamSettings.names()
    sweep: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not values.strip():
            raise ValueError(f"{flag} {item!r}: expected KNOB=V1,V2,... (e.g. temperature=0,0.5,1,1.5)")
        if key not in known:
            raise ValueError(f"{flag} {item!r}: unknown dream knob {key!r}; known: {', '.join(sorted(known))}")
        sweep[key] = [_sweep_value(v) for v in values.split(",")]
    return sweep


def _sweep_value(text: str):
    text = text.strip()
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):  # uncertainty_info and other switches
        return text.lower() == "true"
    try:
        return float(text)
    except ValueError:
        return text


def cmd_evaluate(args: argparse.Namespace) -> None:
    import torch

    from learned_envs.evaluation import evaluate, transfer
    from learned_envs.evaluation.sources import RecordedDataUnavailable, resolve

    torch.set_num_threads(1)  # small networks: a second thread costs more in sync than it saves
    sweep = parse_sweep(args.sweep or [])
    if sweep and not args.transfer:
        raise ValueError("--sweep needs --transfer ALGO (the sweep is over dreams an agent trains in)")
    source = resolve(args.dream)
    out = args.out or f"runs/eval_{source.name}"
    try:
        evaluate(args.dream, args.data, out, horizon=args.horizon, seed=args.seed, video=not args.no_video)
    except (FileNotFoundError, RecordedDataUnavailable) as exc:
        if args.data is not None or not args.transfer:
            raise
        print(f"skipping the fidelity report: {exc}")
    if args.transfer:
        transfer(args.dream, algo=args.transfer, steps=args.steps, sweep=sweep, seeds=args.seeds, episodes=args.episodes,
                 out_dir=out, jobs=args.jobs, ray=args.ray)
        print(f"wrote transfer.json and transfer.png to {out}")


def build_parser() -> argparse.ArgumentParser:
    from learned_envs.version import __version__

    parser = argparse.ArgumentParser(prog="learned-envs", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("collect", help="log transitions from a Gymnasium env")
    p.add_argument("env_id", metavar="ENV_ID", help="Gymnasium id of the env to log, e.g. CartPole-v1")
    p.add_argument("--steps", type=_positive_int, required=True, help="transitions to log")
    p.add_argument("--out", required=True, help="where to write: FILE.npz, FILE.hdf5 (D4RL-style), FILE.pkl (SB3 replay buffer), "
                   "a Minari dataset folder or minari:DATASET_ID (under $MINARI_DATASETS_PATH)")
    p.add_argument("--format", choices=["npz", "minari", "hdf5", "sb3"], help="data format (default: the one --out names)")
    p.add_argument("--policy", default="random", help="'random' (uniform actions), 'pink' (pink-noise actions, Box spaces: "
                   "correlated in time, they travel further) or the path of a saved SB3 agent (.zip; trusted files only)")
    p.add_argument("--algo", default="auto", help="SB3 algorithm of --policy (default: read from the zip)")
    p.add_argument("--epsilon", type=float, default=0.0, help="share of uniformly random actions mixed into --policy")
    p.add_argument("--stochastic", action="store_true", help="an SB3 --policy samples its actions from its distribution "
                   "(as D4RL's medium datasets were) instead of taking its deterministic action")
    p.add_argument("--seed", type=int, default=0, help="seed of the env resets and the random actions (default 0)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("merge", help="join logs of one system (e.g. from several behaviour policies) into one dataset")
    p.add_argument("data", nargs="+", help="logged transitions, in any format fit reads")
    p.add_argument("--out", required=True, help="where to write (format from the name, as for collect)")
    p.add_argument("--format", choices=["npz", "minari", "hdf5", "sb3"], help="data format (default: the one --out names)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("fit", help="fit a dream to logged data and write its checkpoint")
    p.add_argument("data", help="logged transitions: FILE.npz, D4RL-style FILE.hdf5/.h5, an SB3 replay buffer FILE.pkl "
                   "(a pickle: trusted files only), a Minari dataset folder or minari:DATASET_ID")
    p.add_argument("--out", help="checkpoint to write (.safetensors)")
    p.add_argument("--id", help="dream id (e.g. Dream-MyRobot-v0): also install it in the user's dream folder")
    p.add_argument("--source-env", help="Gymnasium id of the logged system (spaces, renderer, time limit)")
    p.add_argument("--max-episode-steps", type=int, help="dream time limit (default: the source env's, or the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", choices=sorted(PRESETS), help="store a recipe's knobs, time limit and training defaults: "
                   # argparse %-formats help strings: a description's "5%" must reach it as "5%%"
                   + "; ".join(f"{name}: {preset.description}" for name, preset in sorted(PRESETS.items())).replace("%", "%%"))
    p.add_argument("--reset-states", type=int, metavar="N", help="store up to N logged states for reset_from=logged "
                   "(default 0, or the preset's)")
    p.add_argument("--dream-default", action="append", metavar="KNOB=VALUE",
                   help="store a knob default in the dream (e.g. out_of_bounds=clip, halt_reward=-100); repeatable")
    p.add_argument("--end-limit", action="append", metavar="FEATURE<VALUE",
                   help="where the real system ends an episode, by flat observation index: FEATURE<VALUE or FEATURE>VALUE "
                   "(Hopper-v5: 0<0.7, 1<-0.2, 1>0.2); added to the end rules found in the data (which see only the ends "
                   "the logs show); quote it for the shell; repeatable")
    p.add_argument("--init", metavar="DREAM", help="warm start: a checkpoint file or registered dream id whose weights and "
                   "normalisers the fit starts from (a refit after new data; seconds, not minutes)")
    size = p.add_argument_group("model size (default: sized for the data, 7 members x 3 layers x 128 units below 20,000 rows, "
                                "PETS/MBPO's 7 x 4 x 200 above; a size given here fixes the network, the rest at 7 x 4 x 200)")
    size.add_argument("--ensemble-size", type=int, help="members trained")
    size.add_argument("--elites", type=int, help="members kept, by holdout error (default 5)")
    size.add_argument("--hidden-size", type=int, help="units per hidden layer")
    size.add_argument("--layers", type=int, help="hidden layers")
    budget = p.add_argument_group("budget (defaults scale with the data; early stopping usually ends the fit first)")
    budget.add_argument("--max-updates", type=int, help="cap on gradient updates of the dynamics")
    budget.add_argument("--max-seconds", type=float, help="cap on the fit's wall time; the best weights so far are kept")
    budget.add_argument("--batch-size", type=int, help="rows per member per update (default: scaled to the data, at most 256)")
    budget.add_argument("--threads", type=int, help="torch CPU threads (default: 1 on a machine of 2 cores or fewer, else half the cores)")
    budget.add_argument("--device", help="torch device to fit on: cpu (default), cuda, cuda:1, ...")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("list", help="show every registered dream")
    p.add_argument("--json", action="store_true", help="print the rows as JSON (every field, for scripts)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train an SB3 agent (rl-zoo hyperparameters) in a dream or a real env and save it")
    p.add_argument("env_id", metavar="ENV_OR_DREAM_ID", help="a registered dream (see `learned-envs list`) or a real Gymnasium env id")
    p.add_argument("--algo", type=str.upper, choices=list(ALGOS),
                   help="SB3 algorithm: PPO or A2C (any), DQN (discrete actions), SAC, TD3 or DDPG (continuous actions); "
                   "default: the dream's stored recipe (fit --preset), else PPO")
    p.add_argument("--steps", type=_positive_int, help="environment steps to train for (default: the dream's stored recipe; "
                   "required otherwise)")
    p.add_argument("--logged-data", metavar="FILE", help="logged transitions a recipe mixes into each batch (default: the "
                   "dataset the dream was fitted on, if it is still there unchanged)")
    p.add_argument("--out", required=True, help="agent zip to write (load it with the SB3 class, or collect --policy)")
    p.add_argument("--seed", type=int, default=0, help="seed of the agent and its envs (default 0)")
    p.add_argument("--dream-kwarg", action="append", metavar="KNOB=VALUE",
                   help="dream knob for this run (e.g. temperature=0.5); repeatable")
    p.add_argument("--max-episode-steps", type=_positive_int, metavar="N",
                   help="dream episode length for this run, over the registered one (the branch length h of MBPO/MOPO; "
                   "a truncation, which agents bootstrap)")
    p.add_argument("--clone-behaviour", type=_non_negative_int, metavar="UPDATES",
                   help="SAC, TD3, DDPG in a dream: start the actor as a clone of the logged behaviour (UPDATES gradient steps "
                   "on the logged data), as MOReL does; 0 turns a recipe's own off (default: the dream's stored recipe, else none)")
    p.add_argument("--hold-actor", type=_non_negative_int, metavar="STEPS",
                   help="with --clone-behaviour: env steps for which the cloned actor takes no gradient while the critic "
                   "learns its values (default 50000)")
    p.add_argument("--anchor", type=float, metavar="ALPHA",
                   help="with --clone-behaviour: after the hold, keep pulling the actor towards the behaviour as TD3+BC "
                   "does, weighted by the critic's scale over ALPHA (TD3+BC's 2.5; default 0: let it go)")
    p.add_argument("--anchor-beta", type=_non_negative_float, metavar="BETA",
                   help="with --anchor: weight each logged row's pull by exp(BETA x its advantage under the agent's critic), "
                   "at most 100, as AWAC and IQL's actor do, divided by the batch's mean weight so that ALPHA alone sets "
                   "the pull's size (IQL's 3.0 on hopper; default 0: every row alike)")
    p.add_argument("--actor-every", type=_positive_int, metavar="K",
                   help="with --clone-behaviour: after the hold, the actor learns on one vector step in K and the critic on "
                   "every one (TD3's delayed policy updates; default 1)")
    p.add_argument("--value-penalty", type=_non_negative_float, metavar="BETA",
                   help="SAC, TD3, DDPG in a dream: charge each dream transition BETA x the spread of its Bellman target "
                   "r + gamma Q(s', a') over the model's members (MOBILE's penalty; it asks the model at every update)")
    p.add_argument("--gamma", type=float, metavar="GAMMA",
                   help="in a dream: the agent's discount factor, in (0, 1] (default: the dream's stored recipe, else the zoo's)")
    p.add_argument("--n-step", type=_positive_int, metavar="N",
                   help="SAC, TD3, DDPG, DQN in a dream: bootstrap the critic's targets N dream steps ahead (n-step returns; "
                   "default 1)")
    p.add_argument("--select-every", type=_positive_int, metavar="STEPS",
                   help="in a dream: every STEPS steps play 10 deterministic dream episodes, and hand back the last policy "
                   "unless the dream scored an earlier one clearly better (SB3's EvalCallback judged in the dream: no real "
                   "steps); with a recipe's short branches, add --select-judge whole")
    p.add_argument("--select-judge", choices=("training", "whole"),
                   help="how --select-every judges: in the training dream's own episodes (training, the default), or in "
                   "whole episodes as the real env plays them: from the logged episode starts, up to the source env's time "
                   "limit, with no uncertainty penalty and no halt (whole: for a recipe's short branches from logged states)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: small networks)")
    p.add_argument("--save-replay-buffer", metavar="FILE.pkl", help="also write an off-policy agent's replay buffer (SB3's "
                   "pickle, which fit, merge and collect read: D4RL's medium-replay datasets are this)")
    p.add_argument("--stop-at-return", type=float, metavar="R",
                   help="real env only: stop once the mean return of 5 deterministic real episodes reaches R, checked every "
                   "--check-every steps (D4RL's medium policy: SAC stopped at about a third of the expert's return)")
    p.add_argument("--check-every", type=_positive_int, default=10_000, help="steps between --stop-at-return checks (default 10000)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("loop", help="learn online: real steps with the agent, refit the dream, train the agent in it, repeat")
    p.add_argument("env_id", metavar="ENV_ID", help="the real Gymnasium env (Box or Discrete spaces)")
    p.add_argument("--agent", default="SAC", type=str.upper, help="SB3 algorithm: SAC (continuous), PPO, DQN (discrete), ... (default SAC)")
    p.add_argument("--real-steps", type=_positive_int, required=True, help="real transitions to spend in all")
    p.add_argument("--out", required=True,
                   help="folder of the run (resumed if it exists): real.npz, dream.safetensors, agent.zip, curve.json/png")
    p.add_argument("--seed", type=int, default=0, help="seed of the real episodes, the fits and the agent (default 0)")
    p.add_argument("--initial-steps", type=_positive_int,
                   help="random real steps before the first fit (default: a fifth of --real-steps, at most 1000)")
    p.add_argument("--noise", choices=("auto", "white", "pink"), default="auto",
                   help="randomness of the real steps: pink (Box actions: correlated in time, it travels further, e.g. "
                        "up MountainCar's hill), white (uniform random steps, the agent's own sampling), or auto "
                        "(default: pink for Box actions, white for Discrete)")
    p.add_argument("--iterations", type=_positive_int, default=10, help="collect-refit-train rounds after the random steps (default 10)")
    p.add_argument("--agent-steps", type=_positive_int, help="agent steps in the dream per round (default 3000 off-policy, 25000 PPO/A2C)")
    p.add_argument("--explorer-steps", type=_positive_int,
                   help="explorer steps in the dream per round, with --explore-fraction (default: --agent-steps)")
    p.add_argument("--eval-episodes", type=_positive_int, default=5,
                   help="real episodes scoring the agent after each round (default 5; not training data)")
    p.add_argument("--dream-check-episodes", type=int, default=10,
                   help="dream episodes judging each round's training: the trained learner replaces the acting agent "
                        "unless it scores >5%% worse in the newest dream; the learner trains on either way "
                        "(default 10; 0: every round's learner acts)")
    p.add_argument("--explore-fraction", type=float, default=0.5,
                   help="share of each round's real steps taken by the explorer (--explorer) (default 0.5; 0: the "
                        "agent takes them all)")
    p.add_argument("--explorer", choices=("random", "disagreement"), default="random",
                   help="who takes --explore-fraction's steps: random actions of --noise (default), or an SB3 agent "
                        "trained in the dream on the members' disagreement")
    p.add_argument("--dream-default", action="append", metavar="KNOB=VALUE",
                   help="dream knob stored in every refit (e.g. temperature=0.5; defaults reset_from=logged, and "
                   "out_of_bounds: halt where the logged rewards are never negative, else clip); repeatable")
    p.set_defaults(func=cmd_loop)

    p = sub.add_parser("score", help="score a saved agent in a real env (a dream id: its source env), with D4RL's "
                       "normalised score where D4RL has references")
    p.add_argument("agent", metavar="AGENT.zip", help="an SB3 agent zip (trusted files only: SB3 unpickles parts of it)")
    p.add_argument("env_id", metavar="ENV_OR_DREAM_ID", help="a real Gymnasium env id, or a dream id (scored in the env it was fitted on)")
    p.add_argument("--episodes", type=_positive_int, default=10, help="deterministic real episodes (default 10, D4RL's count)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode; episode i uses seed + i (default 0)")
    p.add_argument("--algo", default="auto", help="SB3 algorithm of the zip (default: read from the zip)")
    p.add_argument("--json", action="store_true", help="print one JSON row")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("demo", help="train PPO only in Dream-CartPole-v0 and score it in the real CartPole-v1")
    p.add_argument("--dream", default="Dream-CartPole-v0", help="registered dream to train in (default Dream-CartPole-v0)")
    p.add_argument("--steps", type=int, default=100_000, help="PPO steps inside the dream (default 100000)")
    p.add_argument("--episodes", type=int, default=20, help="scoring episodes in the real env (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the agent and of the scoring episodes")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("evaluate", help="how far to trust a dream: fidelity on held-out data, dream-to-real transfer")
    p.add_argument("dream", metavar="CHECKPOINT_OR_DREAM_ID", help="a checkpoint file or a registered dream id")
    p.add_argument("--data", help="held-out logged transitions in any format fit reads, ideally from another policy (default: the "
                   "fit's holdout episodes, if the training data is still where the checkpoint says, unchanged and not a pickle)")
    p.add_argument("--out", help="report folder (default runs/eval_<name>)")
    p.add_argument("--horizon", type=int, default=100, help="longest open-loop rollout k (default 100)")
    p.add_argument("--no-video", action="store_true", help="skip the real | dream GIF")
    p.add_argument("--seed", type=int, default=0, help="seed of the rollouts (default 0)")
    t = p.add_argument_group("dream-to-real transfer (trains agents: minutes)")
    t.add_argument("--transfer", metavar="ALGO", help="SB3 algorithm to train only in the dream, e.g. PPO")
    t.add_argument("--steps", type=int, default=100_000, help="training steps per agent (default 100000)")
    t.add_argument("--sweep", action="append", metavar="KNOB=V1,V2,...",
                   help="dream settings to train under, e.g. temperature=0,0.5,1,1.5 (repeat to combine knobs)")
    t.add_argument("--seeds", type=int, default=1, help="agents per setting (default 1)")
    t.add_argument("--episodes", type=int, default=20, help="scoring episodes in the dream and in the real env (default 20)")
    t.add_argument("--jobs", type=_positive_int, default=1, help="agents trained at once, each in its own process (default 1)")
    t.add_argument("--ray", metavar="ADDRESS", help='train each agent as a Ray task: "local" (a Ray instance on this machine, '
                   '--jobs CPUs) or a cluster address such as "auto" or "ray://head:10001" (pip install "learned-envs[ray]")')
    p.set_defaults(func=cmd_evaluate)
    return parser


def _whole_number(minimum: int, name: str) -> Callable[[str], int]:
    """argparse type: a whole number >= ``minimum``; argparse turns the ValueError into a usage
    error that calls the value by ``name``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError(text)
        return value

    parse.__name__ = name  # what argparse's "invalid ... value" message calls it
    return parse


_positive_int = _whole_number(1, "positive whole number")
_non_negative_int = _whole_number(0, "non-negative whole number")


def _non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(text)
    return value


_non_negative_float.__name__ = "finite number >= 0"


def main(argv: list[str] | None = None) -> int:
    """Run one command; a bad input or usage is one ``learned-envs CMD: error: ...`` line and exit 2."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (DataError, CheckpointError, FileNotFoundError, ValueError, gym.error.Error) as exc:
        print(f"learned-envs {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        # A command's own usage message (`raise SystemExit("learned-envs fit: give --out ...")`): a usage error, exit 2 like argparse's.
        message = exc.code.removeprefix(f"learned-envs {args.command}: ").removeprefix("error: ")
        print(f"learned-envs {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
