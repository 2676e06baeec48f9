#!/usr/bin/env bash
# Rebuilds checkpoints/Dream-Pendulum-v0.safetensors with the package's own commands, from
# 3,000 logged transitions of mixed quality whose behaviour policy is recorded in the file:
#   1,000 under a uniform random policy,
#   1,000 under a partly trained SAC agent taking 50% random actions,
#   1,000 under the same agent taking 10% random actions.
# The agent is only the logger (SAC, rl-zoo hyperparameters, 6,000 steps in the real env).
# The dream learns dynamics, reward and start states from the logs; nothing Pendulum-specific.
# out_of_bounds=clip: every Pendulum reward is negative, so a dream that ended episodes on
# leaving the data's bounds would pay the agent to leave them.
# The logs it fits on are kept in checkpoints/data/ (evaluate finds them there).
# Run from anywhere after `pip install .`:  bash checkpoints/rebuild_Dream-Pendulum-v0.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

learned-envs train Pendulum-v1 --algo SAC --steps 6000 --seed 0 --out "$work/sac_6000.zip"
learned-envs collect Pendulum-v1 --steps 1000 --policy random --seed 1 --out "$work/1_random.npz"
learned-envs collect Pendulum-v1 --steps 1000 --policy "$work/sac_6000.zip" --epsilon 0.5 --seed 2 --out "$work/2_sac_eps0.5.npz"
learned-envs collect Pendulum-v1 --steps 1000 --policy "$work/sac_6000.zip" --epsilon 0.1 --seed 3 --out "$work/3_sac_eps0.1.npz"
learned-envs merge "$work"/[0-9]_*.npz --out "$work/pendulum_mixed_3000.npz"
mkdir -p "$here/data"
cp "$work/pendulum_mixed_3000.npz" "$here/data/pendulum_mixed_3000.npz"
learned-envs fit "$here/data/pendulum_mixed_3000.npz" --source-env Pendulum-v1 --seed 0 \
  --dream-default out_of_bounds=clip --out "$here/Dream-Pendulum-v0.safetensors"
