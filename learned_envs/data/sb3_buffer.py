"""Stable-Baselines3 replay buffers, as saved by ``model.save_replay_buffer(path)``.

The file is a pickle, and unpickling runs code: **load only buffers you made or trust.**

An SB3 ``ReplayBuffer`` with S rows per env (``buffer_size``) and E envs (``n_envs``) holds
    observations        [S, E, *obs_shape]
    next_observations   [S, E, *obs_shape]   absent with ``optimize_memory_usage``: then row i's
                                             next observation is ``observations[(i + 1) % S]``
    actions             [S, E, action_dim]   Box actions scaled to [-1, 1], as SB3's off-policy
                                             algorithms store them
    rewards, dones, timeouts   [S, E]        ``dones`` = terminated or truncated; ``timeouts``
                                             (only with ``handle_timeout_termination``) = truncated
    pos, full                                next row to write; whether the buffer has wrapped
                                             (then the oldest row is at ``pos``)

Rows come out env by env, each env's rows in time order (oldest first). Once the buffer has
wrapped, each env's oldest episode began before the oldest row kept: its id is listed in
``metadata["partial_episodes"]``, so its first row (a mid-episode state) is never taken for a
start state. With
``optimize_memory_usage`` the next observation of an episode's last row was overwritten by the
next episode's first, and the oldest row's observation by the newest row's next one: those rows
are dropped, counted in ``metadata["dropped_rows"]`` and warned about.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from learned_envs.atomic import atomic_path
from learned_envs.data.reading import (
    carried_metadata,
    check_flags,
    episode_numbers,
    flagless_ends,
    next_from_following,
    note_dropped,
    resolve_spaces,
    validate,
    warn_data,
)
from learned_envs.data.transitions import PARTIAL_EPISODES, DataError, Transitions

METADATA_ATTRIBUTE = "learned_envs_metadata"


def load_sb3_buffer(
    path: str | os.PathLike,
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
    actions_scaled: bool | None = None,
) -> Transitions:
    """Read an SB3 replay buffer ``.pkl`` (trusted files only) into validated :class:`Transitions`.

    ``actions_scaled``: whether Box actions are stored scaled to [-1, 1] (default: yes for a Box
    with finite bounds, as SB3's algorithms store them; pass ``False`` for a buffer filled by
    hand with raw actions).
    """
    source = str(path)
    buffer = _unpickle(Path(path), source)
    size, n_envs, pos, full = int(buffer.buffer_size), int(buffer.n_envs), int(buffer.pos), bool(buffer.full)
    optimized = bool(getattr(buffer, "optimize_memory_usage", False)) or getattr(buffer, "next_observations", None) is None
    handled = bool(getattr(buffer, "handle_timeout_termination", False))
    raw = {name: getattr(buffer, name) for name in ("observations", "actions", "rewards", "dones", "timeouts")}
    if not optimized:
        raw["next_observations"] = buffer.next_observations
    for name, value in raw.items():
        if not isinstance(value, np.ndarray) or value.shape[:2] != (size, n_envs):
            shape = getattr(value, "shape", type(value).__name__)
            raise DataError(source, name, f"has shape {shape}, expected ({size}, {n_envs}, ...) for buffer_size {size}, n_envs {n_envs}")

    if not 0 <= pos <= size or (full and pos == size):
        raise DataError(source, "pos", f"is {pos}, outside the buffer's {size} rows (buffer_size {size}, full={full})")
    order = (np.arange(size) + pos) % size if full else np.arange(pos)
    if len(order) == 0:
        raise DataError(source, "rewards", "no transitions: the buffer is empty")
    streams = [_env_stream(raw, order, env, size, optimized, handled, full, source) for env in range(n_envs)]
    arrays = {name: np.concatenate([s[name] for s in streams]) for name in streams[0]}
    offsets = np.cumsum([0] + [int(s["episode_ids"].max()) + 1 if len(s["episode_ids"]) else 0 for s in streams[:-1]])
    arrays["episode_ids"] = np.concatenate([s["episode_ids"] + off for s, off in zip(streams, offsets)])
    # A stream's episode 0 is partial only while some of its rows are left (with
    # optimize_memory_usage it may be dropped whole; then episode 1 starts for real).
    partial = [int(off) for s, off in zip(streams, offsets) if full and np.any(s["episode_ids"] == 0)]
    index, env_of = arrays.pop("buffer_index"), arrays.pop("env_index")

    # Provenance that save_sb3_buffer attached (an attribute SB3 itself ignores).
    metadata: dict[str, Any] = dict(getattr(buffer, METADATA_ATTRIBUTE, None) or {})
    metadata.update(path=source, format="sb3_replay_buffer")
    if full:  # what save_sb3_buffer carried described the rows before they were overwritten
        metadata[PARTIAL_EPISODES] = partial
    dropped = size * n_envs - len(index) if full else pos * n_envs - len(index)
    note_dropped(source, metadata, dropped, "the buffer was saved with optimize_memory_usage, which overwrites the next "
                 "observation of each episode's last row (and, once wrapped, the oldest row's observation)")
    if not handled and (arrays["terminations"]).any():
        warn_data(source, "the buffer was saved without handle_timeout_termination, so time-limit truncations cannot be told "
                          "from terminations: every episode end is read as a termination")
    metadata["sb3_buffer"] = {"buffer_size": size, "n_envs": n_envs, "pos": pos, "full": full,
                              "optimize_memory_usage": optimized, "handle_timeout_termination": handled}
    stored = [_supported(buffer.observation_space, "observation_space", source), _supported(buffer.action_space, "action_space", source)]
    observation_space, action_space = resolve_spaces(source, arrays, metadata, stored, [observation_space, action_space])
    arrays["actions"] = _unscale(arrays["actions"], action_space, actions_scaled, source, metadata)
    return validate(arrays, observation_space, action_space, source, metadata,
                    lambda row: f"buffer index {int(index[row])}, env {int(env_of[row])}")


def _unpickle(path: Path, source: str) -> Any:
    if not path.is_file():
        raise DataError(source, None, "no such file")
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh)
    except Exception as exc:  # unpickling foreign bytes can raise almost anything
        raise DataError(source, None, f"not a pickled SB3 replay buffer ({type(exc).__name__}: {exc})") from None
    from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer

    if isinstance(obj, DictReplayBuffer):
        raise DataError(source, "observations", "a DictReplayBuffer (Dict observations) is not supported: only Box and Discrete spaces")
    if not isinstance(obj, ReplayBuffer):
        raise DataError(source, None, f"holds a {type(obj).__name__}, not an SB3 ReplayBuffer (save one with model.save_replay_buffer)")
    return obj


def _env_stream(raw: dict[str, np.ndarray], order: np.ndarray, env: int, size: int, optimized: bool,
                handled: bool, full: bool, source: str) -> dict[str, np.ndarray]:
    """One env's rows in time order: canonical arrays plus the buffer index of each row."""
    def locate(i: int) -> str:  # where the stream's i-th row sits in the [buffer_size, n_envs] arrays
        return f"buffer index {int(order[i])}, env {env}"

    dones = check_flags(source, "dones", raw["dones"][order, env], locate)
    timeouts = check_flags(source, "timeouts", raw["timeouts"][order, env], locate) if handled else np.zeros(len(order), bool)
    episode = episode_numbers(dones)
    if optimized:
        invalid = np.zeros(len(order), bool)
        invalid[0] = full  # the oldest row's observation slot now holds the newest row's next observation
        # Nothing was written after the newest row, so its next observation is still in place.
        keep = next_from_following(dones, invalid, last_has_next=True)
        nxt = raw["observations"][(order + 1) % size, env]
    else:
        keep, nxt = np.ones(len(order), bool), raw["next_observations"][order, env]
    rows = order[keep]
    return {
        "observations": raw["observations"][rows, env],
        "next_observations": nxt[keep],
        "actions": raw["actions"][rows, env],
        "rewards": raw["rewards"][rows, env],
        "terminations": (dones & ~timeouts)[keep],
        "truncations": timeouts[keep],
        "episode_ids": episode[keep],
        "buffer_index": rows,
        "env_index": np.full(len(rows), env),
    }


def _supported(space: Any, name: str, source: str) -> gym.Space | None:
    if space is None or isinstance(space, (gym.spaces.Box, gym.spaces.Discrete)):
        return space
    raise DataError(source, name, f"{space} is not supported: only Box and Discrete spaces")


def _scaling(space: gym.Space, actions_scaled: bool | None) -> bool:
    if not isinstance(space, gym.spaces.Box):
        return False
    if actions_scaled is None:
        return bool(np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high)))
    return actions_scaled


def scale_box_actions(actions: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    """``actions [N, A]`` in the space's own units, scaled to [-1, 1] as SB3's off-policy agents store
    them (``policy.scale_action``, in its float32 arithmetic)."""
    low, high = space.low.reshape(1, -1).astype(np.float32), space.high.reshape(1, -1).astype(np.float32)
    return 2.0 * ((actions - low) / (high - low)) - 1.0


def _unscale(actions: np.ndarray, space: gym.Space, actions_scaled: bool | None, source: str, metadata: dict) -> np.ndarray:
    """``actions [N, action_dim]`` in the space's own units and shape ``[N, *act_shape]``."""
    n = len(actions)
    if not isinstance(space, gym.spaces.Box):
        return actions.reshape(n, -1)
    actions = actions.reshape(n, *space.shape)
    scaled = _scaling(space, actions_scaled)
    metadata["sb3_buffer"]["actions_scaled"] = scaled
    if not scaled:
        return actions
    outside = ((actions < -1 - 1e-6) | (actions > 1 + 1e-6)).reshape(n, -1).any(axis=1)  # NaN is left to validation
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise DataError(source, "actions", f"{actions[row].tolist()} is outside [-1, 1], where SB3 keeps scaled Box actions; "
                        "for a buffer of raw actions pass actions_scaled=False", row)
    # SB3's policy.unscale_action, in the same float32 arithmetic.
    low, high = space.low.astype(np.float32), space.high.astype(np.float32)
    return low + 0.5 * (actions.astype(np.float32) + 1.0) * (high - low)


def save_sb3_buffer(data: Transitions, path: str | os.PathLike) -> Path:
    """Write ``data`` as a pickled SB3 ``ReplayBuffer`` (``n_envs=1``) that ``model.load_replay_buffer`` takes.

    Box actions are scaled to [-1, 1] like SB3's algorithms store them. The buffer has one spare
    row, so it has not wrapped and its rows read back in order. An SB3 buffer has no episode ids:
    an episode end marked by neither flag is written as a time-out (and warned about). The data's
    metadata rides along as the attribute ``learned_envs_metadata``.
    """
    from stable_baselines3.common.buffers import ReplayBuffer

    n = len(data)
    buffer = ReplayBuffer(n + 1, data.observation_space, data.action_space, device="cpu", n_envs=1, handle_timeout_termination=True)
    flagless = flagless_ends(data)
    if flagless.any():
        warn_data(str(path), f"{int(flagless.sum())} episode ends have neither termination nor truncation; "
                             "the SB3 buffer records them as time-outs")
    actions = data.actions.reshape(n, -1)
    if _scaling(data.action_space, None):
        actions = scale_box_actions(actions, data.action_space)
    timeouts = data.truncations | flagless
    buffer.observations[:n, 0] = data.observations.reshape(n, *buffer.obs_shape)
    buffer.next_observations[:n, 0] = data.next_observations.reshape(n, *buffer.obs_shape)
    buffer.actions[:n, 0] = actions
    buffer.rewards[:n, 0] = data.rewards
    buffer.dones[:n, 0] = data.terminations | timeouts
    buffer.timeouts[:n, 0] = timeouts
    buffer.pos, buffer.full = n, False
    # The reader numbers episodes 0, 1, ... from the flags, so partial episodes are renumbered to match.
    setattr(buffer, METADATA_ATTRIBUTE, carried_metadata(data, written_ids=data.episode_index()))
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(buffer, fh, protocol=pickle.HIGHEST_PROTOCOL)  # what SB3's save_to_pkl does
    return path
