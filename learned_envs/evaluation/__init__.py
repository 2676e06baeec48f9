"""Fidelity metrics, dream-to-real transfer, plots and videos. Reads checkpoints, data and dreams; never feeds back."""
