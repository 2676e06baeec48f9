"""TorchRL over a dream: one env by id, a batched dream wrapped whole, and a collector over it.

    pip install "learned-envs[torchrl]"
    python examples/torchrl_dream.py                       # Dream-Pendulum-v0, 256 dreams per batch

- ``GymEnv("learned_envs:Dream-Pendulum-v0")`` builds a dream by id; the ``learned_envs:`` prefix
  imports the package wherever the env is built. TorchRL passes ``frameskip`` to ``gym.make`` and
  retries without it on the ``TypeError`` an env raises for an unknown keyword, which a dream
  raises as Gymnasium's own envs do.
- ``GymWrapper(gym.make_vec(..., autoreset_mode=DISABLED))`` hands TorchRL the dream's own
  vector env: every step of all ``num_envs`` dreams is one forward call of the world model, and
  TorchRL resets the finished ones itself (it asks for ``DISABLED`` or ``SAME_STEP`` autoreset).
- ``check_env_specs`` passes on both, and a ``Collector`` rolls out ``[num_envs, T]`` batches.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import torch
from torchrl.collectors import Collector
from torchrl.envs import GymEnv, GymWrapper
from torchrl.envs.utils import check_env_specs

import learned_envs  # noqa: F401  (registers the dreams for the gym.make_vec below)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dream", default="Dream-Pendulum-v0")
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--steps-per-batch", type=int, default=200, help="steps of every env in one collected batch")
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    # One dream, built by TorchRL from its id.
    env = GymEnv(f"learned_envs:{args.dream}")
    check_env_specs(env)
    print(f"GymEnv: batch size {tuple(env.batch_size)}, action spec shape {tuple(env.action_spec.shape)}")

    # A batch of dreams in one world-model call per step, wrapped whole.
    dreams = gym.make_vec(args.dream, num_envs=args.num_envs, autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    batched = GymWrapper(dreams)
    check_env_specs(batched)

    # A random policy stands in for an agent: any TorchRL policy module goes in its place.
    frames = args.num_envs * args.steps_per_batch
    collector = Collector(batched, policy=None, frames_per_batch=frames, total_frames=frames * args.batches)
    start = time.perf_counter()
    for i, batch in enumerate(collector):
        ended = int(batch["next", "done"].sum())
        reward = float(batch["next", "reward"].mean())
        print(f"batch {i}: {tuple(batch.batch_size)} steps, {ended} episodes ended, mean reward {reward:.2f}")
    seconds = time.perf_counter() - start
    collector.shutdown()
    print(f"{frames * args.batches:,} dream steps collected in {seconds:.1f} s ({frames * args.batches / seconds:,.0f} steps/s)")


if __name__ == "__main__":
    main()
