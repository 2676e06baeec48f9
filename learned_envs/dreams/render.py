"""Drawing dream states with the source env's own renderer.

Works for envs whose renderer reads an ``unwrapped.state`` attribute that a dream observation
maps onto (CartPole's, MountainCar's, ...; ``OBS_TO_STATE`` holds the few mappings that are not
the identity), and for Gymnasium's MuJoCo envs, whose observation is the joint positions (less
the ones excluded, such as the torso's x) and velocities: the renderer is put in that pose with
``set_state``, excluded positions at their initial values (``OBS_TO_MUJOCO`` holds the exceptions).
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


def _double_pendulum_pose(obs: np.ndarray, nq: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """InvertedDoublePendulum obs ``(x, sin θ1, sin θ2, cos θ1, cos θ2, ẋ, θ1dot, θ2dot, f)`` -> qpos, qvel."""
    return np.array([obs[0], np.arctan2(obs[1], obs[3]), np.arctan2(obs[2], obs[4])]), np.asarray(obs[5:8])


OBS_TO_MUJOCO: dict[str, Callable[[np.ndarray, int, int], tuple[np.ndarray, np.ndarray]]] = {
    "InvertedDoublePendulum": _double_pendulum_pose,
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
        os.environ.setdefault("MUJOCO_GL", "egl")  # MuJoCo's offscreen GL without a display


def renderable_source(env_id: str | None) -> bool:
    """Whether ``env_id`` (from a checkpoint: untrusted) names an env already registered here.

    Only such ids are ever built or looked up: ``gym.make("module:Env-v0")`` would import
    ``module``, so an id with a ':' or one Gymnasium does not know yet never reaches it.
    """
    return isinstance(env_id, str) and ":" not in env_id and env_id in gym.registry


def source_render_fps(env_id: str | None, default: int = 30) -> int:
    """The source env's ``metadata["render_fps"]``, read from its class without building it.

    ``default`` where the class cannot be imported here: a dream steps without its source env's
    package (a HalfCheetah dream on a machine without ``mujoco``), only rendering needs it.
    """
    if not renderable_source(env_id):
        return default
    entry = gym.spec(env_id).entry_point
    try:
        creator = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    except (ImportError, gym.error.DependencyNotInstalled):
        return default
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
        name = env_id.split("/")[-1].rsplit("-v", 1)[0]
        self.to_state = OBS_TO_STATE.get(name, lambda o: o)
        self.to_pose = OBS_TO_MUJOCO.get(name, self._joint_pose)
        unwrapped = self.env.unwrapped
        self.mujoco = hasattr(unwrapped, "set_state") and hasattr(unwrapped, "model")
        if self.mujoco and name not in OBS_TO_MUJOCO:
            nq, nv, obs_dim = unwrapped.model.nq, unwrapped.model.nv, int(np.prod(self.env.observation_space.shape))
            if not 0 <= nq + nv - obs_dim <= nq:
                self.env.close()
                raise NotImplementedError(f"{env_id}'s observation ({obs_dim} values) is not its joint positions and "
                                          f"velocities ({nq} + {nv}), so a dream state cannot be drawn")
        elif not self.mujoco and not hasattr(unwrapped, "state"):
            self.env.close()
            raise NotImplementedError(f"{env_id}'s renderer cannot draw a given state (it has no 'state' attribute)")

    def _joint_pose(self, obs: np.ndarray, nq: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
        """obs = ``[qpos[skipped:], qvel]``: the first ``skipped`` positions (untracked) stay at their initial values."""
        shown = obs.size - nv
        return np.concatenate([self.env.unwrapped.init_qpos[: nq - shown], obs[:shown]]), obs[shown:]

    def render(self, observation: np.ndarray) -> np.ndarray:
        obs = np.asarray(observation, dtype=np.float64).ravel()
        unwrapped = self.env.unwrapped
        if self.mujoco:
            unwrapped.set_state(*self.to_pose(obs, unwrapped.model.nq, unwrapped.model.nv))
            # Gymnasium's offscreen viewer draws into whichever GL context is current; another
            # MuJoCo env closed since (an env checker's, a second dream's) leaves none of ours.
            viewer = getattr(getattr(unwrapped, "mujoco_renderer", None), "viewer", None)
            if viewer is not None and hasattr(viewer, "make_context_current"):
                viewer.make_context_current()
        else:
            unwrapped.state = np.asarray(self.to_state(obs))
        # MuJoCo's renderer hands back a view of one buffer it draws every frame into
        return np.array(self.env.render(), copy=True)

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
