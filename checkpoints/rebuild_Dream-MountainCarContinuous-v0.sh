#!/usr/bin/env bash
# Rebuilds checkpoints/Dream-MountainCarContinuous-v0.safetensors with the package's own
# commands, from 4,000 logged transitions of mixed quality whose behaviour policy is recorded:
#   1,000 under a uniform random policy (which never reaches the flag),
#   2,000 under a SAC agent taking 20% random actions,
#   1,000 under the same agent acting on its own.
# The agent is only the logger (SAC with gSDE, rl-zoo hyperparameters and budget: 50,000 steps in
# the real env; at 15,000 it never reached the flag): the logs must reach the goal sometimes, or
# no dream could learn that there is one.
# The dream learns dynamics, reward (the +100 at the flag included), termination and start
# states from the logs.
# out_of_bounds=clip: every reward is negative until the goal, so a dream that ended episodes
# on leaving the data's bounds would pay the agent to leave them.
# The logs it fits on are kept in checkpoints/data/ (evaluate finds them there).
# Run from anywhere after `pip install .`:  bash checkpoints/rebuild_Dream-MountainCarContinuous-v0.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

learned-envs train MountainCarContinuous-v0 --algo SAC --steps 50000 --seed 0 --out "$work/sac_50000.zip"
learned-envs collect MountainCarContinuous-v0 --steps 1000 --policy random --seed 1 --out "$work/1_random.npz"
learned-envs collect MountainCarContinuous-v0 --steps 2000 --policy "$work/sac_50000.zip" --epsilon 0.2 --seed 2 --out "$work/2_sac_eps0.2.npz"
learned-envs collect MountainCarContinuous-v0 --steps 1000 --policy "$work/sac_50000.zip" --epsilon 0.0 --seed 3 --out "$work/3_sac_eps0.0.npz"
learned-envs merge "$work"/[0-9]_*.npz --out "$work/mountaincarcontinuous_mixed_4000.npz"
mkdir -p "$here/data"
cp "$work/mountaincarcontinuous_mixed_4000.npz" "$here/data/mountaincarcontinuous_mixed_4000.npz"
learned-envs fit "$here/data/mountaincarcontinuous_mixed_4000.npz" --source-env MountainCarContinuous-v0 --seed 0 \
  --dream-default out_of_bounds=clip --out "$here/Dream-MountainCarContinuous-v0.safetensors"
