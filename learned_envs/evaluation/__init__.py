"""Fidelity metrics, dream-to-real transfer, plots and videos. Reads checkpoints, data and dreams; never feeds back.

    evaluate(checkpoint_or_dream_id, data, out_dir)   fidelity on held-out logged episodes
    transfer(checkpoint_or_dream_id, sweep=...)        train only in the dream, score in the real env
"""

from learned_envs.evaluation.report import evaluate
from learned_envs.evaluation.transfer import transfer

__all__ = ["evaluate", "transfer"]
