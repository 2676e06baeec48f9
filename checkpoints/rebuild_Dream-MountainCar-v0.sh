#!/usr/bin/env bash
# Rebuilds checkpoints/Dream-MountainCar-v0.safetensors with the package's own commands, from a
# logged dataset of mixed quality whose behaviour policy is recorded:
#   1,000 transitions under a uniform random policy,
#   2,000 under a partly trained DQN agent with --epsilon 0.2 (share of random actions),
#   1,000 under a partly trained DQN agent with --epsilon 0.0 (share of random actions).
# The agent is only the logger: DQN (rl-zoo hyperparameters) trained 60,000 steps in the real
# MountainCar-v0 (a random policy never reaches the goal; the logs must, sometimes).
# The dream learns reward, dynamics, termination and start states from the 4,000 transitions.
# out_of_bounds=clip: every MountainCar reward is -1 until the goal, so a dream that ended episodes on
# leaving the data's bounds would reward leaving them.
# Run from anywhere after `pip install .`:  bash checkpoints/rebuild_Dream-MountainCar-v0.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
env_id=MountainCar-v0
agent="$work/dqn_mountaincar_60000steps_seed0.zip"

python -c "import sys, torch; torch.set_num_threads(1); from learned_envs.training import train_in_real; \
train_in_real(sys.argv[1], int(sys.argv[2]), 'DQN', seed=0, progress=False).save(sys.argv[3])" "$env_id" 60000 "$agent"
learned-envs collect "$env_id" --steps 1000 --policy random --seed 1 --out "$work/random.npz"
learned-envs collect "$env_id" --steps 2000 --policy "$agent" --epsilon 0.2 --seed 2 --out "$work/dqn_eps0.2.npz"
learned-envs collect "$env_id" --steps 1000 --policy "$agent" --epsilon 0.0 --seed 3 --out "$work/dqn_eps0.0.npz"

# One dataset from the parts, episode boundaries kept; metadata["behaviour_policy"] lists the parts.
python -c '
import sys, numpy as np
from pathlib import Path
from learned_envs.data import as_transitions, load, save
out, parts = sys.argv[1], [load(p) for p in sys.argv[2:]]
keys = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")
arrays = {k: np.concatenate([getattr(d, k) for d in parts]) for k in keys}
ids, offset = [], 0
for d in parts:
    ids.append(d.episode_index() + offset)
    offset += d.num_episodes
arrays["episode_ids"] = np.concatenate(ids)
described = []
for d in parts:
    policy = dict(d.metadata["behaviour_policy"])
    if "path" in policy:
        policy["path"] = Path(policy["path"]).name
    described.append({**policy, "transitions": len(d), "episodes": d.num_episodes, "collect_seed": d.metadata.get("seed")})
meta = {"source_env_id": parts[0].metadata["source_env_id"], "behaviour_policy": {"kind": "mixture", "parts": described}}
save(as_transitions(arrays, parts[0].observation_space, parts[0].action_space, out, meta), out)
print("wrote", len(arrays["rewards"]), "transitions,", offset, "episodes, to", out)
' "$work/mountaincar_mixed_4000.npz" "$work/random.npz" "$work/dqn_eps0.2.npz" "$work/dqn_eps0.0.npz"

learned-envs fit "$work/mountaincar_mixed_4000.npz" --source-env "$env_id" --seed 0 \
  --dream-default out_of_bounds=clip --out "$here/Dream-MountainCar-v0.safetensors"
