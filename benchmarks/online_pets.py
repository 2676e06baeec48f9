"""The online loop's peer: mbrl-lib 0.2.0's PETS (probabilistic ensemble + CEM planning) on the same real-step budget.

PETS is built from mbrl-lib's own parts, as its ``algorithms/pets.py`` builds it: a GaussianMLP
ensemble in a ``OneDTransitionRewardModel`` (rewards learned, as the learned-envs loop learns them;
no hand-written reward function), ``ModelTrainer``, ``ModelEnv`` and a
``TrajectoryOptimizerAgent`` with the CEM optimiser. The protocol mirrors ``learned-envs loop``:
``min(1000, budget // 5)`` uniformly random real steps, then CEM-MPC in the real env with the
model retrained every ``--retrain-every`` real steps, until the budget is spent; then the final
controller is scored over ``--episodes`` real episodes (reset seeds ``50_000 + seed + i``, as
``benchmarks/online.py`` scores the loop's agent). Continuous actions only (PETS plans in a Box).

mbrl-lib's PETS configs (``pets_cartpole``: 5 x 200 x 4 ensemble of 7, population 350, horizon
15, 20 particles) cost ~3 s a real step on one CPU core here; the defaults below (population 200,
8 particles, ensemble of 5, 3 hidden layers of 200) are cut to about a tenth of that work so that
3,000 real steps and the scoring episodes fit in well under an hour. Say so when quoting it.

    python benchmarks/online_pets.py --env Pendulum-v1 --seeds 0 --budget 3000

Writes benchmarks/results/online_pets.json (one row per env and seed).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "online_pets.json"


def pets_config(env: gym.Env, args: argparse.Namespace, seed: int):
    """The omegaconf tree mbrl-lib's helpers read (its ``examples/conf`` layout, values filled in)."""
    import omegaconf

    low, high = env.action_space.low.tolist(), env.action_space.high.tolist()
    return omegaconf.OmegaConf.create({
        "seed": seed, "device": "cpu",
        "dynamics_model": {"_target_": "mbrl.models.GaussianMLP", "_recursive_": False, "device": "cpu", "num_layers": args.layers,
                           "ensemble_size": args.ensemble, "hid_size": 200, "deterministic": False,
                           "propagation_method": "fixed_model", "learn_logvar_bounds": False,
                           "activation_fn_cfg": {"_target_": "torch.nn.SiLU"}},
        "algorithm": {"learned_rewards": True, "target_is_delta": True, "normalize": True,
                      "normalize_double_precision": True, "dataset_size": args.budget,
                      "agent": {"_target_": "mbrl.planning.TrajectoryOptimizerAgent", "_recursive_": False, "action_lb": low, "action_ub": high,
                                "planning_horizon": args.horizon, "replan_freq": 1, "verbose": False,
                                "optimizer_cfg": {"_target_": "mbrl.planning.CEMOptimizer", "num_iterations": 5,
                                                  "elite_ratio": 0.1, "population_size": args.population,
                                                  "alpha": 0.1, "lower_bound": "???", "upper_bound": "???",
                                                  "return_mean_elites": True, "device": "cpu", "clipped_normal": False}}},
        "overrides": {"num_steps": args.budget, "num_elites": args.ensemble, "model_lr": 7.5e-4, "model_wd": 3e-5,
                      "model_batch_size": 256, "validation_ratio": 0.2, "patience": 25, "num_epochs_train_model": 25},
    })


def termination_fn_for(env_id: str):
    """mbrl-lib's hand-written termination where it has one; otherwise episodes only time out."""
    from mbrl.env import termination_fns

    if env_id.startswith("InvertedPendulum"):
        return termination_fns.inverted_pendulum
    return termination_fns.no_termination


def run_pets(env_id: str, seed: int, args: argparse.Namespace) -> dict:
    """One PETS run on ``env_id``: the real-step budget spent, the final controller scored."""
    import mbrl.models
    import mbrl.planning
    import mbrl.util.common

    torch.manual_seed(seed)
    env = gym.make(env_id)
    if not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(f"PETS plans continuous actions; {env_id} has {env.action_space}")
    cfg = pets_config(env, args, seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
    model = mbrl.util.common.create_one_dim_tr_model(cfg, obs_shape, act_shape)
    buffer = mbrl.util.common.create_replay_buffer(cfg, obs_shape, act_shape, rng=rng, obs_type=np.double,
                                                   action_type=np.double, reward_type=np.double)
    model_env = mbrl.models.ModelEnv(env, model, termination_fn_for(env_id), None, generator=generator)
    trainer = mbrl.models.ModelTrainer(model, optim_lr=cfg.overrides.model_lr, weight_decay=cfg.overrides.model_wd)
    agent = mbrl.planning.create_trajectory_optim_agent_for_model(model_env, cfg.algorithm.agent, num_particles=args.particles)
    random_steps = min(1000, args.budget // 5)
    start = time.perf_counter()
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    work = tempfile.mkdtemp(prefix="pets_")
    for step in range(args.budget):
        if step >= random_steps and (step - random_steps) % args.retrain_every == 0:
            mbrl.util.common.train_model_and_save_model_and_data(model, trainer, cfg.overrides, buffer, work_dir=work)
        action = env.action_space.sample() if step < random_steps else agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, next_obs, reward, terminated, truncated)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
            agent.reset()
        if args.progress and (step + 1) % 200 == 0:
            print(f"  {env_id} seed {seed}: {step + 1} real steps, {time.perf_counter() - start:.0f} s", flush=True)
    mbrl.util.common.train_model_and_save_model_and_data(model, trainer, cfg.overrides, buffer, work_dir=work)
    train_seconds = time.perf_counter() - start
    returns = []
    for episode in range(args.episodes):
        obs, _ = env.reset(seed=50_000 + seed + episode)
        agent.reset()
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return {"env_id": env_id, "seed": seed, "real_steps": args.budget, "return": float(np.mean(returns)),
            "return_std": float(np.std(returns)), "episodes": args.episodes, "train_seconds": round(train_seconds, 1),
            "seconds": round(time.perf_counter() - start, 1),
            "settings": {k: getattr(args, k) for k in ("retrain_every", "population", "horizon", "particles", "ensemble", "layers")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", type=int, default=3000, help="real steps, random ones included")
    parser.add_argument("--episodes", type=int, default=20, help="real episodes scoring the final controller")
    parser.add_argument("--retrain-every", type=int, default=200, help="real steps between model retrains")
    parser.add_argument("--population", type=int, default=200)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--ensemble", type=int, default=5)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        row = run_pets(args.env, seed, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {"runs": []}
    rerun = {(x["env_id"], x["seed"]) for x in rows}
    kept = [r for r in previous["runs"] if (r["env_id"], r["seed"]) not in rerun]
    Path(args.out).write_text(json.dumps({"benchmark": "online_pets", "peer": "mbrl-lib 0.2.0 PETS (CEM)",
                                          "runs": kept + rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
