#!/usr/bin/env bash
# Rebuilds checkpoints/Dream-Pendulum-v0.safetensors with the package's own commands, from a
# logged dataset of mixed quality whose behaviour policy is recorded:
#   1,000 transitions under a uniform random policy,
#   1,000 under a partly trained SAC agent with half its actions random (--epsilon 0.5),
#   1,000 under the same agent with 10% random actions (--epsilon 0.1).
# The agent is only the logger: SAC (rl-zoo hyperparameters) trained 6,000 steps in the real
# Pendulum-v1. The dream learns reward, dynamics and start states from the 3,000 transitions.
# out_of_bounds=clip: every Pendulum reward is negative, so a dream that ended episodes on
# leaving the data's bounds would reward leaving them.
# Run from anywhere after `pip install .`:  bash checkpoints/rebuild_Dream-Pendulum-v0.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
env_id=Pendulum-v1
agent="$work/sac_pendulum_6000steps_seed0.zip"

python -c "import sys, torch; torch.set_num_threads(1); from learned_envs.training import train_in_real; \
train_in_real(sys.argv[1], int(sys.argv[2]), 'SAC', seed=0, progress=False).save(sys.argv[3])" "$env_id" 6000 "$agent"
learned-envs collect "$env_id" --steps 1000 --policy random --seed 1 --out "$work/random.npz"
learned-envs collect "$env_id" --steps 1000 --policy "$agent" --epsilon 0.5 --seed 2 --out "$work/sac_eps0.5.npz"
learned-envs collect "$env_id" --steps 1000 --policy "$agent" --epsilon 0.1 --seed 3 --out "$work/sac_eps0.1.npz"

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
' "$work/pendulum_mixed_3000.npz" "$work/random.npz" "$work/sac_eps0.5.npz" "$work/sac_eps0.1.npz"

learned-envs fit "$work/pendulum_mixed_3000.npz" --source-env "$env_id" --seed 0 \
  --dream-default out_of_bounds=clip --out "$here/Dream-Pendulum-v0.safetensors"
