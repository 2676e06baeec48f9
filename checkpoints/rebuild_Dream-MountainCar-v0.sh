#!/usr/bin/env bash
# Rebuilds checkpoints/Dream-MountainCar-v0.safetensors with the package's own commands, from
# 4,000 logged transitions of mixed quality whose behaviour policy is recorded in the file:
#   1,000 under a uniform random policy (which never reaches the flag),
#   2,000 under a DQN agent taking 20% random actions,
#   1,000 under the same agent acting greedily.
# The agent is only the logger (DQN, rl-zoo hyperparameters and budget: 120,000 steps in the real
# env; at 60,000 it never reached the flag): the logs must reach the goal sometimes, or no dream
# could learn that there is one.
# The dream learns dynamics, reward, termination (the goal) and start states from the logs.
# out_of_bounds=clip: every reward is -1 until the goal, so a dream that ended episodes on
# leaving the data's bounds would pay the agent to leave them.
# The logs it fits on are kept in checkpoints/data/ (evaluate finds them there).
# Run from anywhere after `pip install .`:  bash checkpoints/rebuild_Dream-MountainCar-v0.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

learned-envs train MountainCar-v0 --algo DQN --steps 120000 --seed 0 --out "$work/dqn_120000.zip"
learned-envs collect MountainCar-v0 --steps 1000 --policy random --seed 1 --out "$work/1_random.npz"
learned-envs collect MountainCar-v0 --steps 2000 --policy "$work/dqn_120000.zip" --epsilon 0.2 --seed 2 --out "$work/2_dqn_eps0.2.npz"
learned-envs collect MountainCar-v0 --steps 1000 --policy "$work/dqn_120000.zip" --epsilon 0.0 --seed 3 --out "$work/3_dqn_eps0.0.npz"
learned-envs merge "$work"/[0-9]_*.npz --out "$work/mountaincar_mixed_4000.npz"
mkdir -p "$here/data"
cp "$work/mountaincar_mixed_4000.npz" "$here/data/mountaincar_mixed_4000.npz"
learned-envs fit "$here/data/mountaincar_mixed_4000.npz" --source-env MountainCar-v0 --seed 0 \
  --dream-default out_of_bounds=clip --out "$here/Dream-MountainCar-v0.safetensors"
