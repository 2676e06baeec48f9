#!/usr/bin/env bash
# Rebuilds checkpoints/Dream-CartPole-v0.safetensors with the package's own commands:
# 1,000 transitions of CartPole-v1 under a uniform random policy, then the default fit.
# Nothing about CartPole is written by hand: reward, termination and start states are learned.
# The logs it fits on are kept in checkpoints/data/ (evaluate finds them there).
# Run from anywhere after `pip install .`:  bash checkpoints/rebuild_Dream-CartPole-v0.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
learned-envs collect CartPole-v1 --steps 1000 --policy random --seed 1 --out "$work/cartpole_random_1000.npz"
mkdir -p "$here/data"
cp "$work/cartpole_random_1000.npz" "$here/data/cartpole_random_1000.npz"
learned-envs fit "$here/data/cartpole_random_1000.npz" --source-env CartPole-v1 --seed 0 --out "$here/Dream-CartPole-v0.safetensors"
