"""RLlib (the new API stack) trained only in a dream, then scored in the real env.

    pip install "learned-envs[ray]"
    python examples/rllib_dream.py                                       # PPO: Dream-CartPole-v0 -> CartPole-v1
    python examples/rllib_dream.py --temperature 0.5 --env-runners 2 --max-minutes 15
    python examples/rllib_dream.py --algo SAC --dream Dream-Pendulum-v0 --stop-return -180   # continuous actions

What it shows:
- the env id carries its module, ``learned_envs:Dream-CartPole-v0``, so every env runner (a
  separate Ray worker process, where the driver's Gymnasium registry does not travel) imports
  ``learned_envs`` and finds the dream itself;
- dream knobs travel in ``env_config``: RLlib passes it to ``gym.make_vec`` as keyword arguments;
- ``gym_env_vectorize_mode="vector_entry_point"`` hands each runner the dream's own batched vector
  env (all its envs in one forward call) instead of a Python loop over single envs.

Training stops on what the dream shows (its mean episode return), never on the real env; only
then is the greedy policy scored over ``--episodes`` episodes of the real env the dream was
fitted on, the way RLlib acts without exploring (the distribution's deterministic action,
unsquashed into the action space).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable

# One torch thread per process: the networks are small and two cores are shared by the driver
# (the learner) and the env runners. Set before torch is imported, and passed on to the workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig  # noqa: E402
from ray.rllib.algorithms.ppo import PPOConfig  # noqa: E402
from ray.rllib.algorithms.sac import SACConfig  # noqa: E402
from ray.rllib.core.columns import Columns  # noqa: E402
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig  # noqa: E402
from ray.rllib.utils.spaces.space_utils import unsquash_action  # noqa: E402

import learned_envs  # noqa: E402, F401  (registers the dreams here, in the driver, to read the source env)
from learned_envs.checkpoint import read_metadata  # noqa: E402
from learned_envs.training import score_in_real  # noqa: E402


def algorithm_config(algo: str) -> AlgorithmConfig:
    """RLlib's own tuned settings: PPO as its CartPole example (learning rate, epochs, value loss
    weight), SAC as its Pendulum example (learning rates, n-step returns, prioritised replay)."""
    if algo == "PPO":
        return (
            PPOConfig()
            .training(lr=3e-4, num_epochs=6, vf_loss_coeff=0.01, train_batch_size_per_learner=4000, minibatch_size=128)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[64, 64], vf_share_layers=False))
        )
    return (
        SACConfig()
        .training(initial_alpha=1.001, actor_lr=2e-4, critic_lr=8e-4, alpha_lr=9e-4, lr=None, target_entropy="auto",
                  n_step=(2, 5), tau=0.005, train_batch_size_per_learner=256, target_network_update_freq=1,
                  replay_buffer_config={"type": "PrioritizedEpisodeReplayBuffer", "capacity": 100_000, "alpha": 1.0, "beta": 0.0},
                  num_steps_sampled_before_learning_starts=256)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[256, 256], fcnet_activation="relu"))
        .reporting(min_sample_timesteps_per_iteration=1000, metrics_num_episodes_for_smoothing=5)
    )


def build_config(algo: str, dream_id: str, env_config: dict, env_runners: int, envs_per_runner: int, seed: int) -> AlgorithmConfig:
    """``algo`` sampling from ``env_runners`` remote runners, each stepping a batched dream."""
    return (
        algorithm_config(algo)
        .environment(f"learned_envs:{dream_id}", env_config=env_config)
        .env_runners(
            num_env_runners=env_runners,
            num_envs_per_env_runner=envs_per_runner,
            gym_env_vectorize_mode="vector_entry_point",
            num_cpus_per_env_runner=0.5,  # two runners and the learner share two cores
        )
        .debugging(seed=seed)
    )


def deterministic_action(module, action_space: gym.Space) -> Callable[[np.ndarray], Any]:
    """The RLModule's action without exploration for one observation (the most likely discrete
    action; a squashed Gaussian's mean), in the env's action space: how the policy acts for real."""
    dist_cls = module.get_inference_action_dist_cls()

    def act(obs: np.ndarray) -> Any:
        with torch.no_grad():
            out = module.forward_inference({Columns.OBS: torch.as_tensor(obs[None], dtype=torch.float32)})
        action = dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS]).to_deterministic().sample()[0].numpy()
        # RLlib's modules act in [-1, 1] on Box spaces (normalize_actions), its connectors unsquash.
        return unsquash_action(action, action_space) if isinstance(action_space, gym.spaces.Box) else int(action)

    return act


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algo", choices=["PPO", "SAC"], default="PPO", help="SAC for continuous actions")
    parser.add_argument("--dream", default="Dream-CartPole-v0", help="a registered dream")
    parser.add_argument("--temperature", type=float, help="dream knob passed through env_config (default: the dream's)")
    parser.add_argument("--env-runners", type=int, default=2)
    parser.add_argument("--envs-per-runner", type=int, default=8)
    parser.add_argument("--stop-return", type=float, default=490.0, help="stop once the dream's mean episode return reaches this")
    parser.add_argument("--max-iterations", type=int, default=60)
    parser.add_argument("--max-minutes", type=float, default=12.0)
    parser.add_argument("--episodes", type=int, default=20, help="real episodes scoring the trained policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--address", help="a running Ray cluster (default: start a local Ray instance)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    real_env = read_metadata(gym.spec(args.dream).kwargs["checkpoint"])["source_env_id"]  # the env the logs came from
    env_config = {} if args.temperature is None else {"temperature": args.temperature}
    # The workers inherit this process's environment (PYTHONPATH, OMP_NUM_THREADS) on a local
    # instance; on a cluster, learned-envs must be installed on every node.
    start = time.perf_counter()
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    algo = build_config(args.algo, args.dream, env_config, args.env_runners, args.envs_per_runner, args.seed).build_algo()
    dream_return, steps = float("nan"), 0
    for iteration in range(1, args.max_iterations + 1):
        result = algo.train()
        dream_return = result["env_runners"].get("episode_return_mean", float("nan"))
        steps = int(result["env_runners"].get("num_env_steps_sampled_lifetime", steps))
        minutes = (time.perf_counter() - start) / 60
        print(f"iteration {iteration:3d}: dream return {dream_return:6.1f}  env steps {steps:>8,}  {minutes:5.1f} min", flush=True)
        if dream_return >= args.stop_return or minutes >= args.max_minutes:
            break
    train_minutes = (time.perf_counter() - start) / 60  # Ray's start and the runners' included
    act = deterministic_action(algo.get_module(), gym.make(real_env).action_space)  # the dream's spaces are its
    mean, std = score_in_real(act, real_env, args.episodes, seed=10_000 + args.seed)
    print(f"{args.algo} trained only in {args.dream} ({args.env_runners} env runners, {steps:,} dream steps, "
          f"{train_minutes:.1f} min): real {real_env} return {mean:.1f} +- {std:.1f} over {args.episodes} episodes")
    algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
