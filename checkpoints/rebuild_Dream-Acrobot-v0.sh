#!/usr/bin/env bash
# Rebuilds checkpoints/Dream-Acrobot-v0.safetensors with the package's own commands, from
# 4,000 logged transitions of mixed quality whose behaviour policy is recorded in the file:
#   1,000 under a uniform random policy,
#   2,000 under a partly trained DQN agent taking 30% random actions,
#   1,000 under the same agent taking 10% random actions.
# The agent is only the logger (DQN, rl-zoo hyperparameters, 30,000 steps in the real env).
# The dream learns dynamics, reward, termination (the goal) and start states from the logs.
# out_of_bounds=clip: every Acrobot reward is -1 until the goal, so a dream that ended episodes
# on leaving the data's bounds would pay the agent to leave them.
# The logs it fits on are kept in checkpoints/data/ (evaluate finds them there).
# Run from anywhere after `pip install .`:  bash checkpoints/rebuild_Dream-Acrobot-v0.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

learned-envs train Acrobot-v1 --algo DQN --steps 30000 --seed 0 --out "$work/dqn_30000.zip"
learned-envs collect Acrobot-v1 --steps 1000 --policy random --seed 1 --out "$work/1_random.npz"
learned-envs collect Acrobot-v1 --steps 2000 --policy "$work/dqn_30000.zip" --epsilon 0.3 --seed 2 --out "$work/2_dqn_eps0.3.npz"
learned-envs collect Acrobot-v1 --steps 1000 --policy "$work/dqn_30000.zip" --epsilon 0.1 --seed 3 --out "$work/3_dqn_eps0.1.npz"
learned-envs merge "$work"/[0-9]_*.npz --out "$work/acrobot_mixed_4000.npz"
mkdir -p "$here/data"
cp "$work/acrobot_mixed_4000.npz" "$here/data/acrobot_mixed_4000.npz"
learned-envs fit "$here/data/acrobot_mixed_4000.npz" --source-env Acrobot-v1 --seed 0 \
  --dream-default out_of_bounds=clip --out "$here/Dream-Acrobot-v0.safetensors"
