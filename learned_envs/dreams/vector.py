"""``DreamVectorEnv``: N dreams as one ``gymnasium.vector.VectorEnv``, stepped by one forward call.

``gym.make_vec("Dream-CartPole-v0", num_envs=N)`` builds it through the dream's
``vector_entry_point``, where Gymnasium's ``SyncVectorEnv`` would loop over N single envs.
It keeps Gymnasium's vector conventions, so code written for ``SyncVectorEnv`` runs unchanged:

- ``autoreset_mode`` (``metadata["autoreset_mode"]``): ``NEXT_STEP`` (Gymnasium's default) ends an
  episode with the terminal observation and resets that dream on the *next* call to ``step``,
  whose action for it is ignored and which returns its first observation with reward 0 and no
  ``terminated``/``truncated``. ``SAME_STEP`` resets in the same call and puts the terminal
  observation in ``info["final_obs"]`` (an object array, ``None`` for rows that did not end) and
  its step info in ``info["final_info"]``, with masks ``"_final_obs"`` and ``"_final_info"``.
  ``DISABLED`` leaves resets to ``reset(options={"reset_mask": done})``.
- infos are a dict of ``[N]`` arrays, each with a ``"_key"`` bool mask of the rows that carry it
  (a row that reset in a step carries its reset info, which is empty, not its step info).
- ``reset(seed=...)`` makes the run reproducible; ``options`` may hold ``"reset_mask"`` (``[N]``
  bool, reset only those rows) and ``"initial_observation"`` (one observation for every reset
  row, or ``[N or R, *obs_shape]``).
- truncation at ``max_episode_steps`` happens per dream, inside the core.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from learned_envs.dream_settings import check_max_episode_steps
from learned_envs.dreams.autoreset import restart_rows
from learned_envs.dreams.core import DreamCore
from learned_envs.dreams.render import DreamFrames, source_render_fps


def require_started(started: np.ndarray, face: str) -> None:
    """Refuse a step while any row of ``started [N] bool`` has never been reset: its state is the
    core's placeholder, not a state of the dream. Gymnasium's vector envs raise ``ResetNeeded`` here too."""
    if not started.all():
        rows = np.flatnonzero(~started)
        which = "any dream" if len(rows) == len(started) else f"dreams {rows[:10].tolist()}"
        raise ResetNeeded(f"{face}: cannot step before reset() has started {which}; call reset() first")


def masked_info(info: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    """Gymnasium's vector info for the rows in ``mask``: each ``[N]`` array, zero outside ``mask``,
    next to its ``"_key"`` mask; ``{}`` when no row is in ``mask``.

    Zeroing matches what ``VectorEnv._add_info`` builds for a ``SyncVectorEnv`` and keeps
    values of rows whose step was thrown away (autoreset) from looking meaningful.
    """
    if not mask.any():
        return {}
    out: dict[str, np.ndarray] = {}
    everywhere = bool(mask.all())
    for key, value in info.items():
        out[key] = value if everywhere else np.where(mask, value, np.zeros((), dtype=value.dtype))
        out[f"_{key}"] = mask.copy()
    return out


class DreamVectorEnv(VectorEnv):
    """``num_envs`` dreams of one checkpoint, batched on the core's device.

    Args:
        checkpoint: path to the dream's ``.safetensors`` file (or a loaded ``Checkpoint``).
        num_envs: N, any positive number.
        render_mode: ``None`` or ``"rgb_array"`` (one frame per dream, drawn by the source env).
        autoreset_mode: an :class:`AutoresetMode` or its string value.
        **dream_kwargs: go to :class:`DreamCore` (``device``, ``max_episode_steps``,
            ``temperature``, ``out_of_bounds``, ...).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 50, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        checkpoint: Any,
        num_envs: int = 1,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        **dream_kwargs: Any,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not supported; use one of {self.metadata['render_modes']}")
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        check_max_episode_steps(dream_kwargs.get("max_episode_steps"))
        self.core = DreamCore(checkpoint, num_envs=num_envs, **dream_kwargs)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.source_env_id: str | None = self.core.checkpoint.metadata.get("source_env_id")
        # An instance copy: the class-level dict must not change with one env's mode or source.
        fps = source_render_fps(self.source_env_id)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode, "render_fps": fps}
        # Rows whose last step ended an episode (NEXT_STEP resets them on the next step).
        self._needs_reset = np.zeros(num_envs, dtype=np.bool_)
        self._started = np.zeros(num_envs, dtype=np.bool_)  # rows reset at least once
        self._seeded = False
        self._frames = DreamFrames(self.source_env_id)

    # -- reset -----------------------------------------------------------------------------
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start new episodes in every dream (or the rows of ``options["reset_mask"]``).

        One generator drives all dreams, so a list of seeds (``SyncVectorEnv`` style, one per
        dream) is mixed into one seed through ``numpy.random.SeedSequence``: every entry counts.
        Returns observations ``[N, *obs_shape]`` (rows outside the mask keep their current
        observation) and an empty info dict.
        """
        if isinstance(seed, (list, tuple)):
            seed = self._one_seed(list(seed))
        super().reset(seed=seed)  # sets self.np_random from seed
        if seed is not None or not self._seeded:
            self.core.seed(self.np_random)
            self._seeded = True
        options = options or {}
        mask = self._reset_mask(options.get("reset_mask"))
        initial = self._initial_observations(options.get("initial_observation"), mask)
        if mask is None:
            self._needs_reset[:] = False
            obs = self.core.reset_rows(None, initial)
            self._started[:] = True
            return obs, {}
        self._needs_reset[mask] = False
        self._started[mask] = True
        obs = self.core.observations()
        obs[mask] = self.core.reset_rows(mask, initial)
        return obs, {}

    def _one_seed(self, seeds: list[int | None]) -> int | None:
        """A list of per-dream seeds as one seed for the shared generator."""
        if len(seeds) != self.num_envs:
            raise ValueError(f"If seeds are passed as a list the length must match num_envs={self.num_envs} but got length={len(seeds)}.")
        if all(s is None for s in seeds):
            return None
        if any(s is None for s in seeds):
            raise ValueError(f"seed list {seeds} mixes None and integers; the dreams share one generator, so seed all of them or none")
        return int(np.random.SeedSequence([int(s) for s in seeds]).generate_state(1, np.uint64)[0] >> 1)

    def _reset_mask(self, mask: Any) -> np.ndarray | None:
        """Validate ``options["reset_mask"]`` as ``SyncVectorEnv`` does: a ``[N]`` bool array with a True."""
        if mask is None:
            return None
        if not isinstance(mask, np.ndarray):
            raise TypeError(f"`options['reset_mask']` must be a numpy array, got {type(mask)}")
        if mask.shape != (self.num_envs,):
            raise ValueError(f"`options['reset_mask']` must have shape `({self.num_envs},)`, got {mask.shape}")
        if mask.dtype != np.bool_:
            raise TypeError(f"`options['reset_mask']` must have `dtype=np.bool_`, got {mask.dtype}")
        if not mask.any():
            raise ValueError(f"`options['reset_mask']` must contain a boolean array with at least one True value, got reset_mask={mask}")
        return mask

    def _initial_observations(self, initial: Any, mask: np.ndarray | None) -> np.ndarray | None:
        """``options["initial_observation"]`` as ``[1 or R, *obs_shape]`` for the R reset rows.

        Accepts one observation (for every reset row), one per reset row, or one per dream
        (``[N, ...]``, of which the masked rows are used).
        """
        if initial is None:
            return None
        space = self.single_observation_space
        obs = np.asarray(initial, dtype=space.dtype)
        count = self.num_envs if mask is None else int(mask.sum())
        if obs.shape == space.shape:
            obs = obs[None]
        elif obs.shape[1:] != space.shape or obs.shape[0] not in (count, self.num_envs):
            raise ValueError(
                f"initial_observation must have shape {space.shape}, ({count}, *{space.shape}) or "
                f"({self.num_envs}, *{space.shape}); got {obs.shape}"
            )
        elif mask is not None and obs.shape[0] == self.num_envs != count:
            obs = obs[mask]
        return obs  # DreamCore.reset_rows checks that each lies inside the space

    # -- step ------------------------------------------------------------------------------
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every dream with ``actions`` (``[N]`` Discrete, ``[N, *act_shape]`` Box).

        Returns observations ``[N, *obs_shape]``, rewards ``[N]`` float64, terminations and
        truncations ``[N]`` bool, and the info dict, autoreset according to ``autoreset_mode``.
        """
        require_started(self._started, "DreamVectorEnv.step")
        if self.autoreset_mode == AutoresetMode.DISABLED and self._needs_reset.any():
            rows = np.flatnonzero(self._needs_reset).tolist()
            raise RuntimeError(f"autoreset_mode=DISABLED: dreams {rows} ended; reset them with reset(options={{'reset_mask': ...}}) first")
        batch = self.core.step(actions)
        obs, rewards = batch.observations, batch.rewards
        terminated, truncated = batch.terminated, batch.truncated
        infos: dict[str, Any] = {}
        # Rows whose step info is reported; a row reset in this call reports its (empty) reset info.
        reports = np.ones(self.num_envs, dtype=np.bool_)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            resetting = self._needs_reset
            if resetting.any():
                # The core stepped these rows too (one forward call for all); their step is discarded.
                obs = restart_rows(self.core, obs, resetting)
                rewards[resetting] = 0.0
                terminated[resetting] = False
                truncated[resetting] = False
                reports = ~resetting
        elif self.autoreset_mode == AutoresetMode.SAME_STEP:
            done = terminated | truncated
            if done.any():
                final_obs = np.full(self.num_envs, None, dtype=object)
                for i in np.flatnonzero(done):
                    final_obs[i] = obs[i].copy()
                infos.update(final_obs=final_obs, _final_obs=done.copy())
                infos.update(final_info=masked_info(batch.info, done), _final_info=done.copy())
                obs = restart_rows(self.core, obs, done)
                reports = ~done
        self._needs_reset = terminated | truncated
        infos.update(masked_info(batch.info, reports))
        return obs, rewards, terminated, truncated, infos

    # -- rendering and teardown ------------------------------------------------------------
    def render(self) -> tuple[np.ndarray, ...] | None:
        """One RGB frame ``[H, W, 3]`` per dream, as ``SyncVectorEnv`` returns them."""
        if self.render_mode != "rgb_array":
            return None
        return tuple(self._frames.draw(self.core.observations()))

    def close_extras(self, **kwargs: Any) -> None:
        # A constructor that refused its arguments never made the frames, yet gymnasium's
        # ``__del__`` still closes the half-built env.
        frames = getattr(self, "_frames", None)
        if frames is not None:
            frames.close()
