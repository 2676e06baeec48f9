"""D4RL's normalised score: 0 is a uniformly random policy, 100 an expert, on D4RL's own reference returns.

    normalized_score("HalfCheetah-v5", 4000.0)  # -> 34.8

The reference returns are D4RL's (``d4rl/infos.py``, REF_MIN_SCORE / REF_MAX_SCORE), measured on
the v2 MuJoCo envs; Gymnasium's v5 envs keep the same reward definitions, so the scale carries over
(an approximation the benchmark tables say they use).
"""

from __future__ import annotations

# Env name (version dropped) -> (random return, expert return).
D4RL_REFERENCE: dict[str, tuple[float, float]] = {
    "Hopper": (-20.272305, 3234.3),
    "HalfCheetah": (-280.178953, 12135.0),
    "Walker2d": (1.629008, 4592.3),
}


def reference_returns(env_id: str) -> tuple[float, float] | None:
    """D4RL's (random, expert) returns for ``env_id`` (any version, e.g. ``Hopper-v5``), or None."""
    name = env_id.split("/")[-1].split(":")[-1].rsplit("-v", 1)[0]
    return D4RL_REFERENCE.get(name)


def normalized_score(env_id: str, episode_return: float) -> float | None:
    """``100 * (return - random) / (expert - random)`` on D4RL's references; None for other envs."""
    ref = reference_returns(env_id)
    if ref is None:
        return None
    low, high = ref
    return 100.0 * (float(episode_return) - low) / (high - low)
