"""A side-by-side ``real | dream`` GIF of one logged episode replayed open loop.

Both halves are drawn by the source env's own renderer (:class:`SourceRenderer`), so the GIF works
for envs whose renderer can draw a given state (CartPole, MountainCar, ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` with ``text`` written in its top-left corner (plain if PIL is missing)."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:  # pragma: no cover - PIL ships with matplotlib
        return frame
    image = Image.fromarray(frame)
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
            left = renderer.render(real[t])[::scale, ::scale]
            right = renderer.render(dream[t])[::scale, ::scale]
            left = _label(np.ascontiguousarray(left), f"real  t={t}")
            right = _label(np.ascontiguousarray(right), f"dream (open loop)  t={t}")
            gap = np.zeros((left.shape[0], 3, 3), dtype=np.uint8)
            frames.append(np.concatenate([left, gap, right], axis=1))
    finally:
        renderer.close()
    imageio.mimsave(path, frames, duration=1000 * stride / fps, loop=0)
    return path
