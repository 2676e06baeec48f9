"""A side-by-side ``real | dream`` GIF of one logged episode replayed open loop through the model.

Both halves are drawn by the source env's own renderer (:class:`SourceRenderer`), so the GIF works
for envs whose renderer can draw a given state (CartPole, MountainCar, ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _shrink_and_label(frame: np.ndarray, scale: int, text: str) -> np.ndarray:
    """``frame`` downscaled by ``scale`` (antialiased) with ``text`` in its top-left corner."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:  # pragma: no cover - PIL ships with matplotlib
        return np.ascontiguousarray(frame[::scale, ::scale])
    image = Image.fromarray(frame)
    image = image.resize((frame.shape[1] // scale, frame.shape[0] // scale), Image.Resampling.BOX)
    ImageDraw.Draw(image).text((6, 4), text, fill=(0, 0, 0))
    return np.asarray(image)


def write_side_by_side_gif(
    path: Path,
    env_id: str,
    real: np.ndarray,
    dream: np.ndarray,
    fps: int = 25,
    scale: int = 2,
    stride: int = 1,
) -> Path:
    """Write ``real [T, D]`` beside ``dream [T, D]`` as a GIF; frames are downscaled by ``scale``.

    Raises ``NotImplementedError`` when ``env_id``'s renderer cannot draw a given state.
    """
    import imageio.v2 as imageio

    from learned_envs.dreams.render import SourceRenderer

    renderer = SourceRenderer(env_id)
    frames = []
    try:
        for t in range(0, len(real), stride):
            left = _shrink_and_label(renderer.render(real[t]), scale, f"real  t={t}")
            right = _shrink_and_label(renderer.render(dream[t]), scale, f"model (same actions, open loop)  t={t}")
            gap = np.zeros((left.shape[0], 3, 3), dtype=np.uint8)
            frames.append(np.concatenate([left, gap, right], axis=1))
    finally:
        renderer.close()
    imageio.mimsave(path, frames, duration=1000 * stride / fps, loop=0)
    return path
