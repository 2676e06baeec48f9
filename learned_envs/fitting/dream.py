"""From logged data to a dream file: ``learned-envs fit``.

:func:`fit` checks the data and options, trains the world model (:mod:`.trainer`), works out
what the dream needs beside it (start states, support, time limit, the disagreement scale of
``halt_threshold="auto"``, the neighbour distances of ``support_halt="auto"``), writes one
checkpoint, and loads it back before it replaces any existing file: a fit never leaves behind a
dream its own loader would refuse.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from learned_envs.data.spaces import env_spaces
from learned_envs.data.transitions import Transitions
from learned_envs.dream_settings import DISAGREEMENT_QUANTILES, DreamSettings
from learned_envs.dreams.support import LoggedSupport
from learned_envs.fitting.config import FitConfig, FitError
from learned_envs.fitting.split import to_batch
from learned_envs.fitting.trainer import FitResult, fit_world_model
from learned_envs.models.base import WorldModel


@torch.no_grad()
def train_disagreement(model: WorldModel, data: Transitions, batch: int = 4096) -> np.ndarray:
    """``[N]`` the members' disagreement on each logged (state, action) pair: the scale
    ``halt_threshold="auto"`` is set against."""
    every = to_batch(data, next(model.parameters()).device)
    chunks = []
    for lo in range(0, len(data), batch):
        obs, action = every.obs[lo:lo + batch], every.action[lo:lo + batch]
        out = model.predict(model.encode(obs), action, temperature=0.0, members="mean", uncertainty=True)
        chunks.append(out.disagreement.float().cpu().numpy())
    return np.concatenate(chunks)


def max_disagreement(model: WorldModel, data: Transitions, batch: int = 4096) -> float:
    """The largest member disagreement over the logged (state, action) pairs."""
    return float(train_disagreement(model, data, batch).max())


def disagreement_metrics(model: WorldModel, data: Transitions) -> dict[str, Any]:
    """The fit metrics ``halt_threshold="auto"`` reads: ``max_train_disagreement`` and
    ``train_disagreement_quantiles`` (``{"q": value}`` at :data:`DISAGREEMENT_QUANTILES`)."""
    values = train_disagreement(model, data)
    return {"max_train_disagreement": float(values.max()), "train_disagreement_quantiles": quantile_record(values)}


def quantile_record(values: np.ndarray) -> dict[str, float]:
    """``{"q": value}``: the quantiles of ``values`` at :data:`DISAGREEMENT_QUANTILES`, as a fit records them."""
    return {repr(q): float(v) for q, v in zip(DISAGREEMENT_QUANTILES, np.quantile(values, DISAGREEMENT_QUANTILES))}


def observed_bounds(data: Transitions) -> tuple[np.ndarray, np.ndarray]:
    """``[D]`` low/high over every logged observation and next observation (the dream's support
    before its ``bounds_margin``)."""
    n = len(data)
    flat_obs, flat_next = data.observations.reshape(n, -1), data.next_observations.reshape(n, -1)
    low = np.minimum(flat_obs.min(0), flat_next.min(0))
    high = np.maximum(flat_obs.max(0), flat_next.max(0))
    return low.astype(np.float32), high.astype(np.float32)


EndLimit = tuple[int, str, float]  # (flat observation index, "<" or ">", value)


def parse_end_limit(text: str) -> EndLimit:
    """``"1>0.2"`` -> ``(1, ">", 0.2)``: the episode ends where flat observation feature 1 exceeds
    0.2 (``"0<0.7"``: where feature 0 falls below 0.7).

    Declared limits are what MBPO and MOPO hard-code per env (Hopper ends below a height of 0.7 or
    past an angle of +-0.2): a fit finds an end rule only on a side where the logs show ends (a
    medium Hopper log: height and backward tilt, never forward tilt), so a limit the logs never
    reached is one the dream cannot know. A user who knows the system's limits says so here.
    """
    for side in "<>":
        feature, sep, value = str(text).partition(side)
        if sep:
            break
    else:
        raise FitError(f"end limit {text!r}: write FEATURE<VALUE or FEATURE>VALUE (e.g. 0<0.7, 1>0.2)")
    try:
        index, bound = int(feature.strip()), float(value.strip())
    except ValueError:
        raise FitError(f"end limit {text!r}: FEATURE must be a whole number (a flat observation index) "
                       f"and VALUE a number") from None
    if index < 0 or not np.isfinite(bound):
        raise FitError(f"end limit {text!r}: the feature index must be >= 0 and the value finite")
    return index, side, bound


def check_end_limits(limits: Sequence[EndLimit], data: Transitions) -> None:
    """Refuse a declared limit that names no feature of ``data`` or that a logged episode went on
    past (a next observation beyond it in a row that did not end): the data says it is wrong."""
    n = len(data)
    next_obs = data.next_observations.reshape(n, -1)
    ongoing = ~np.asarray(data.terminations, dtype=bool)
    for feature, side, value in limits:
        if feature >= next_obs.shape[1]:
            raise FitError(f"end limit {feature}{side}{value}: the observations have {next_obs.shape[1]} features "
                           f"(indices 0 to {next_obs.shape[1] - 1})")
        beyond = (next_obs[:, feature] < value) if side == "<" else (next_obs[:, feature] > value)
        rows = np.flatnonzero(beyond & ongoing)
        if len(rows):
            raise FitError(f"end limit {feature}{side}{value}: {len(rows)} logged rows go on past it, the first row "
                           f"{rows[0]} (next_observations[{rows[0]}][{feature}] = {next_obs[rows[0], feature]:.6g}, "
                           f"not terminated)")


def support_metrics(states: np.ndarray | None, seed: int, queries: int = 2_000) -> dict[str, Any]:
    """The fit metric ``support_halt="auto"`` reads: ``support_distance_quantiles`` (``{"q": value}``
    at :data:`DISAGREEMENT_QUANTILES`), each of up to ``queries`` logged states' distance to the
    nearest of the rest of ``states [M, D]`` (the dream's own search set, less the queried tenth
    at most): how far from its neighbours a logged state the model was fitted on lies."""
    if states is None or len(states) < 2:
        return {}
    count = max(1, min(queries, len(states) // 10))
    held = np.zeros(len(states), bool)
    held[np.random.default_rng([seed, 0x5B7]).choice(len(states), size=count, replace=False)] = True
    return {"support_distance_quantiles": quantile_record(LoggedSupport(states[~held]).distance(states[held]))}


def start_states(data: Transitions, progress: bool) -> np.ndarray:
    """The dream's start-state pool: the first observation of every episode that starts in the
    data. Episodes that began before it (``metadata["partial_episodes"]``, e.g. the oldest of a
    wrapped replay buffer) start mid-way, so they train the dynamics but give no start state."""
    starts = data.episode_starts(include_partial=False)
    left_out = data.num_episodes - len(starts)
    if len(starts) == 0:
        warnings.warn(f"every one of the {data.num_episodes} episodes began before the data, so the dream starts from "
                      "their first logged (mid-episode) states; log from a reset to give it real start states", stacklevel=3)
        return data.episode_starts()
    if left_out:
        _say(f"left {left_out} episodes that began before the data out of the start states ({len(starts)} remain)", progress)
    return starts


def logged_state_sample(data: Transitions, count: int, seed: int) -> np.ndarray | None:
    """``[M, D]``: up to ``count`` logged observations drawn without replacement (every one when
    the data holds fewer), for ``reset_from="logged"``; ``None`` for ``count`` 0."""
    if count <= 0:
        return None
    flat = data.observations.reshape(len(data), -1)
    if count >= len(flat):
        return flat.astype(np.float32, copy=True)
    rows = np.sort(np.random.default_rng([seed, 0x5E7]).choice(len(flat), size=count, replace=False))
    return flat[rows].astype(np.float32)


def fit(
    data: Transitions | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    dream_id: str | None = None,
    source_env: str | None = None,
    seed: int = 0,
    config: FitConfig | None = None,
    max_episode_steps: int | None = None,
    dream_defaults: dict[str, Any] | None = None,
    init: str | os.PathLike | None = None,
    reset_states: int | None = None,
    preset: str | None = None,
    end_limits: Sequence[str] = (),
    progress: bool = True,
) -> Path:
    """Fit a dream to logged data and write its checkpoint; the function behind ``learned-envs fit``.

    ``data`` is a :class:`Transitions` or a path any reader accepts. With ``dream_id``, the
    checkpoint also goes to the user's dream folder, so ``dream_id`` is registered at the next
    ``import learned_envs``. ``dream_defaults`` sets the dream's stored knob defaults
    (:class:`DreamSettings`, e.g. ``{"out_of_bounds": "clip"}``). ``init`` (a checkpoint file or
    a registered dream id) warm-starts from that dream's weights and normalisers, for a refit
    after new data arrives. ``reset_states`` stores up to that many logged states (a uniform
    sample) for the dream's ``reset_from="logged"``. ``preset`` (:mod:`learned_envs.presets`, e.g.
    ``"offline"``) supplies defaults for the knobs, the time limit and ``reset_states`` (each
    argument given here wins) and stores the preset's training recipe for ``train``.
    ``end_limits`` declares where the real system ends an episode, as ``"FEATURE<VALUE"`` or
    ``"FEATURE>VALUE"`` (a flat observation index; see :func:`parse_end_limit`), added to the end
    rules the fit finds in the data. Returns the path written.

    Everything that could make a broken dream is refused before any training (:class:`FitError`,
    ``ValueError``), and the written file is loaded back before it replaces an existing one.
    The caller's global torch RNG is left as it was (building models draws from it).
    """
    with torch.random.fork_rng(devices=[]):
        return _fit(data, out, dream_id=dream_id, source_env=source_env, seed=seed, config=config,
                    max_episode_steps=max_episode_steps, dream_defaults=dream_defaults, init=init,
                    reset_states=reset_states, preset=preset, end_limits=end_limits, progress=progress)


def _fit(data, out, *, dream_id, source_env, seed, config, max_episode_steps, dream_defaults, init, reset_states,
         preset, end_limits, progress) -> Path:
    """:func:`fit`'s work, inside a fork of the global torch RNG."""
    from learned_envs import data as data_io
    from learned_envs.checkpoint import build_metadata
    from learned_envs.paths import user_dream_dir
    from learned_envs.registry import validate_dream_id

    if out is None and dream_id is None:
        raise ValueError("fit needs an output file (out=...) or a dream id (dream_id=...)")
    if dream_id is not None:
        validate_dream_id(dream_id)
    targets = [Path(out)] if out is not None else []
    if dream_id is not None:
        targets.append(user_dream_dir() / f"{dream_id}.safetensors")
    for target in targets:
        if target.is_dir():
            raise FitError(f"--out {target} is a directory; give the checkpoint's file name (e.g. {target / 'dream.safetensors'})")
    training = None
    if preset is not None:
        from learned_envs.presets import get_preset

        chosen = get_preset(preset)
        dream_defaults = {**chosen.dream_defaults, **(dream_defaults or {})}
        max_episode_steps = chosen.max_episode_steps if max_episode_steps is None else max_episode_steps
        reset_states = chosen.reset_states if reset_states is None else reset_states
        training = {"preset": chosen.name, "algo": chosen.training.algo, "steps": chosen.training.steps}
    reset_states = 0 if reset_states is None else reset_states
    settings = DreamSettings.resolve({}, dream_defaults or {})  # fail on a bad knob before fitting
    if isinstance(reset_states, bool) or not isinstance(reset_states, int) or reset_states < 0:
        raise FitError(f"reset_states must be a whole number >= 0, got {reset_states!r}")
    if settings.reset_from == "logged" and reset_states == 0:
        raise FitError("the dream default reset_from='logged' needs logged states to reset from: give reset_states > 0 "
                       "(--reset-states N)")
    config = dataclasses.replace(config or FitConfig(), seed=seed)
    config.validate()
    limits = [parse_end_limit(limit) for limit in end_limits]
    data_path = None
    if not isinstance(data, Transitions):
        data_path = Path(data)
        spaces = env_spaces(source_env) if source_env else (None, None)
        data = data_io.load(data_path, *spaces)
    source_env = source_env or data.metadata.get("source_env_id")
    if source_env is not None and not isinstance(source_env, str):
        raise FitError(f"the data's source_env_id should be a Gymnasium id string, not {source_env!r:.80}; pass --source-env")
    check_end_limits(limits, data)
    initial = _warm_start_model(init, data, config) if init is not None else None
    model_config = initial.config if initial is not None else config.model  # None: an ensemble sized for the data
    if limits and model_config is not None and not getattr(model_config, "end_rules", False):
        raise FitError("declared end limits need a model with end rules; this fit's model has none")
    result = fit_world_model(data, config, progress=progress, init=initial)
    if limits:
        result.model.declare_end_limits(limits)
    result.metrics.update(disagreement_metrics(result.model, data))

    max_episode_steps = _time_limit(source_env, max_episode_steps, progress)
    low, high = observed_bounds(data)
    starts = start_states(data, progress).reshape(-1, low.shape[0])
    resets = logged_state_sample(data, reset_states, seed)
    result.metrics.update(support_metrics(resets, seed))
    metadata = build_metadata(
        model_config=result.model.config.to_json(),
        model_family=result.model.family,
        observation_space=data.observation_space,
        action_space=data.action_space,
        source_env_id=source_env,
        dream={"id": dream_id, "max_episode_steps": max_episode_steps, **dataclasses.asdict(settings)},
        dataset={
            # Absolute, so `evaluate` without --data finds the file from any folder.
            "path": data_io.resolved_source(data_path or data.metadata.get("path")),
            "sha256": data_io.source_sha256(data_path) if data_path else None,
            "transitions": len(data),
            "episodes": data.num_episodes,
            "behaviour_policy": data.metadata.get("behaviour_policy"),
            "spaces_inferred": data.metadata.get("spaces_inferred", []),
        },
        fit={"history": result.history, "metrics": result.metrics, "holdout_episodes": result.holdout_episodes,
             "init": str(init) if init is not None else None,
             "end_limits": [f"{feature}{side}{value!r}" for feature, side, value in limits]},
        training=training,
    )
    for target in targets:
        write_checked(target, result, starts, low, high, metadata, resets)
    return targets[0]


def write_checked(target: Path, result: FitResult, starts: np.ndarray, low: np.ndarray, high: np.ndarray,
                  metadata: dict[str, Any], reset_states: np.ndarray | None = None) -> None:
    """Write the checkpoint beside ``target``, load it back (the loader's every check), and only
    then move it over ``target``: a fit never replaces a good file with one that does not load."""
    from learned_envs.checkpoint import load_checkpoint, save_checkpoint

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".fitting", dir=target.parent)
    os.close(fd)
    try:
        save_checkpoint(tmp, result.model, starts, low, high, metadata, reset_states)
        load_checkpoint(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _warm_start_model(init: str | os.PathLike, data: Transitions, config: FitConfig) -> WorldModel:
    """The model of dream ``init`` (a file or a registered id), checked to fit ``data``'s spaces."""
    from learned_envs.checkpoint import load_checkpoint
    from learned_envs.data.spaces import space_to_json

    path = Path(init)
    if not path.is_file() and str(init) in gym.registry:
        path = Path(gym.spec(str(init)).kwargs.get("checkpoint", init))
    checkpoint = load_checkpoint(path, device=config.device)
    for name in ("observation_space", "action_space"):
        if space_to_json(getattr(data, name)) != checkpoint.metadata[name]:
            raise FitError(f"--init {init}: that dream's {name.replace('_', ' ')} {getattr(checkpoint, name)} is not the data's "
                           f"{getattr(data, name)}")
    model = checkpoint.model
    if config.model is not None and type(config.model) is not type(model.config):
        raise FitError(f"--init {init}: a {model.family!r} model, but the fit asks for {type(config.model).__name__}")
    return model


def _say(message: str, progress: bool) -> None:
    """A note from ``fit`` on what it inferred: on stderr beside the progress bars, and only with them."""
    if progress:
        tqdm.write(f"fit: {message}", file=sys.stderr)


def _time_limit(source_env: str | None, given: int | None, progress: bool, default: int = 1000) -> int:
    """The dream's time limit: ``given``, else the source env's, else ``default``. Without a
    registered source env, says so: the limit was defaulted and the dream has no renderer."""
    registered = bool(source_env) and source_env in gym.registry
    missing = None if registered else (f"source env {source_env!r} is not registered here" if source_env
                                       else "no source env (give source_env=, or data that records it)")
    if missing:
        _say(f"{missing}: the dream will have no renderer (render() draws with the source env's own)", progress)
    limit = given if given is not None else gym.spec(source_env).max_episode_steps if registered else None
    if limit is not None:
        return int(limit)
    why = missing or f"{source_env} has no time limit"
    _say(f"{why}: the dream's time limit defaulted to {default} steps (set max_episode_steps= to change it)", progress)
    return default
