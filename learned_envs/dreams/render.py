"""Drawing dream states with the source env's own renderer.

Works for envs whose renderer reads an ``unwrapped.state`` attribute that a dream observation
maps onto (CartPole's, MountainCar's, ...). ``OBS_TO_STATE`` holds the few mappings that are not
the identity.
"""

from __future__ import annotations

import os
from typing import Callable

import gymnasium as gym
import numpy as np


def _pendulum_state(obs: np.ndarray) -> np.ndarray:
    """Pendulum obs ``(cos θ, sin θ, θdot)`` -> state ``(θ, θdot)``."""
    return np.array([np.arctan2(obs[1], obs[0]), obs[2]])


def _acrobot_state(obs: np.ndarray) -> np.ndarray:
    """Acrobot obs ``(cos θ1, sin θ1, cos θ2, sin θ2, θ1dot, θ2dot)`` -> state ``(θ1, θ2, θ1dot, θ2dot)``."""
    return np.array([np.arctan2(obs[1], obs[0]), np.arctan2(obs[3], obs[2]), obs[4], obs[5]])


# Source env name (no namespace, no version) -> obs to ``unwrapped.state``; absent means identity
# (CartPole, MountainCar, MountainCarContinuous).
OBS_TO_STATE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Pendulum": _pendulum_state,
    "Acrobot": _acrobot_state,
}


def quiet_headless_sdl() -> None:
    """Keep SDL (pygame, under the source envs' renderers) from printing ``error: XDG_RUNTIME_DIR
    is invalid`` on machines without a session: drawing to an array needs no audio and no
    display, so SDL's dummy drivers serve. Settings the user made are left alone."""
    if os.environ.get("XDG_RUNTIME_DIR") and os.path.isdir(os.environ["XDG_RUNTIME_DIR"]):
        return  # a desktop session: SDL finds what it needs
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def renderable_source(env_id: str | None) -> bool:
    """Whether ``env_id`` (from a checkpoint: untrusted) names an env already registered here.

    Only such ids are ever built or looked up: ``gym.make("module:Env-v0")`` would import
    ``module``, so an id with a ':' or one Gymnasium does not know yet never reaches it.
    """
    return isinstance(env_id, str) and ":" not in env_id and env_id in gym.registry


def source_render_fps(env_id: str | None, default: int = 30) -> int:
    """The source env's ``metadata["render_fps"]``, read from its class without building it."""
    if not renderable_source(env_id):
        return default
    entry = gym.spec(env_id).entry_point
    creator = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    return int(getattr(creator, "metadata", {}).get("render_fps") or default)


class SourceRenderer:
    """Renders observations of ``env_id`` as RGB arrays ``[H, W, 3]`` uint8."""

    def __init__(self, env_id: str):
        if not renderable_source(env_id):
            raise NotImplementedError(
                f"cannot render: the dream's source env id {env_id!r:.80} is not an environment registered in Gymnasium here "
                "(ids with ':' are never used, since making them would import a module the checkpoint names)"
            )
        self.env_id = env_id
        quiet_headless_sdl()  # before the renderer imports pygame
        self.env = gym.make(env_id, render_mode="rgb_array")
        self.env.reset(seed=0)
        self.to_state = OBS_TO_STATE.get(env_id.split("/")[-1].rsplit("-v", 1)[0], lambda o: o)
        if not hasattr(self.env.unwrapped, "state"):
            self.env.close()
            raise NotImplementedError(f"{env_id}'s renderer cannot draw a given state (it has no 'state' attribute)")

    def render(self, observation: np.ndarray) -> np.ndarray:
        self.env.unwrapped.state = np.asarray(self.to_state(np.asarray(observation, dtype=np.float64)))
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class DreamFrames:
    """Frames of a face's dreams, drawn by the source env's renderer, which is built on first use.

    The one rendering path of :class:`DreamEnv`, :class:`DreamVectorEnv` and the SB3 VecEnv.
    """

    def __init__(self, source_env_id: str | None):
        self.source_env_id = source_env_id
        self._renderer: SourceRenderer | None = None

    def draw(self, observations: np.ndarray) -> list[np.ndarray]:
        """``[N, *obs_shape]`` observations -> N RGB frames ``[H, W, 3]`` uint8."""
        if self._renderer is None:
            if not self.source_env_id:
                raise NotImplementedError("this dream has no source env id, so there is no renderer to draw it")
            self._renderer = SourceRenderer(self.source_env_id)
        return [self._renderer.render(obs) for obs in observations]

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
