"""Fitting an :class:`EnsembleWorldModel` to logged :class:`Transitions`.

The recipe (PETS / MBPO, with the details that matter on small data):
- hold out whole episodes (never rows of an episode the model trains on);
- normalise inputs ``[obs, action]`` and targets ``[Δobs, reward]`` on the training split;
- each member trains on its own bootstrap of the training rows, Gaussian NLL with soft-bounded
  log-variance;
- every epoch, each member's holdout MSE is measured; a member's weights at its own best epoch
  are kept; training stops when no member has improved for ``patience`` epochs;
- the ``num_elites`` members with the lowest holdout error are kept, the rest dropped;
- the termination classifier reads the next observation, with the rare terminal rows
  up-weighted by the negatives-to-positives ratio.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import gymnasium as gym

from learned_envs.data.spaces import flat_dim
from learned_envs.dream_settings import DreamSettings
from learned_envs.data.transitions import Transitions
from learned_envs.models.ensemble import EnsembleConfig, EnsembleWorldModel


@dataclass
class FitConfig:
    ensemble_size: int = 7
    num_elites: int = 5
    hidden_size: int = 200
    num_layers: int = 4
    termination_hidden_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 5e-5
    batch_size: int = 256
    max_epochs: int = 400
    min_updates: int = 2000
    patience: int = 25
    holdout_fraction: float = 0.2
    logvar_bound_weight: float = 0.01
    seed: int = 0
    device: str = "cpu"


@dataclass
class FitResult:
    model: EnsembleWorldModel
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    train_episodes: list[int] = field(default_factory=list)
    holdout_episodes: list[int] = field(default_factory=list)


def split_by_episode(data: Transitions, holdout_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``[N] bool`` masks (train, holdout) that never cut an episode in two."""
    episodes = data.episode_index()
    num = int(episodes.max()) + 1
    if num < 2 or holdout_fraction <= 0:
        return np.ones(len(data), bool), np.zeros(len(data), bool)
    n_hold = min(num - 1, max(1, int(round(num * holdout_fraction))))
    held = rng.choice(num, size=n_hold, replace=False)
    holdout = np.isin(episodes, held)
    return ~holdout, holdout


def _tensors(data: Transitions, device: str) -> dict[str, torch.Tensor]:
    n = len(data)
    obs = torch.as_tensor(data.observations.reshape(n, -1), dtype=torch.float32, device=device)
    nxt = torch.as_tensor(data.next_observations.reshape(n, -1), dtype=torch.float32, device=device)
    act = torch.as_tensor(data.actions if isinstance(data.action_space, gym.spaces.Discrete) else data.actions.reshape(n, -1), device=device)
    return {
        "obs": obs,
        "act": act,
        "target": torch.cat([nxt - obs, torch.as_tensor(data.rewards, device=device).unsqueeze(-1)], dim=-1),
        "next_obs": nxt,
        "done": torch.as_tensor(data.terminations, dtype=torch.float32, device=device),
    }


def fit_world_model(data: Transitions, config: FitConfig | None = None, progress: bool = True) -> FitResult:
    """Fit dynamics, reward and termination to ``data``; returns the elite-pruned model and its history.

    The same ``config.seed`` gives the same model, and the caller's global torch RNG is left as it was.
    """
    config = config or FitConfig()
    if config.num_elites > config.ensemble_size:
        raise ValueError(f"num_elites ({config.num_elites}) exceeds ensemble_size ({config.ensemble_size})")
    # Parameter initialisation draws from the global CPU generator; seeding it on a fork keeps the
    # fit repeatable without resetting the caller's stream. Only the CPU generator is seeded
    # (torch.manual_seed would also queue a seed for every CUDA device), so CUDA needs no fork.
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(config.seed)
        return _fit_seeded(data, config, progress)


def _fit_seeded(data: Transitions, config: FitConfig, progress: bool) -> FitResult:
    """:func:`fit_world_model`'s work, run with the global CPU generator already seeded."""
    rng = np.random.default_rng(config.seed)
    torch_gen = torch.Generator(device="cpu").manual_seed(config.seed)
    discrete = isinstance(data.action_space, gym.spaces.Discrete)
    model_config = EnsembleConfig(
        obs_dim=flat_dim(data.observation_space),
        action_dim=int(data.action_space.n) if discrete else flat_dim(data.action_space),
        discrete_actions=discrete,
        ensemble_size=config.ensemble_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        termination_hidden_size=config.termination_hidden_size,
    )
    model = EnsembleWorldModel(model_config).to(config.device)

    train_mask, hold_mask = split_by_episode(data, config.holdout_fraction, rng)
    train, hold = _tensors(data.select(train_mask), config.device), _tensors(data.select(hold_mask), config.device)
    if not hold_mask.any():  # a single episode: validate on the training rows rather than not at all
        hold = train
    inputs = torch.cat([train["obs"], model.action_features(train["act"])], dim=-1)
    model.input_norm.fit(inputs)
    model.target_norm.fit(train["target"])

    start = time.perf_counter()
    history, holdout_mse = _fit_dynamics(model, train, hold, config, torch_gen, progress)
    elites = torch.argsort(torch.as_tensor(holdout_mse))[: config.num_elites]
    model.keep_members(elites.to(config.device))
    term_history, term_metrics = _fit_termination(model, train, hold, config, torch_gen, progress)
    history.update(term_history)
    model.eval()

    metrics = {
        "holdout_mse_per_member": [float(holdout_mse[i]) for i in elites.tolist()],
        "holdout_mse": float(np.mean([holdout_mse[i] for i in elites.tolist()])),
        **term_metrics,
        "train_rows": int(train_mask.sum()),
        "holdout_rows": int(hold_mask.sum()),
        "fit_seconds": round(time.perf_counter() - start, 2),
        "fit_config": asdict(config),
    }
    episodes = data.episode_index()
    return FitResult(
        model=model,
        history=history,
        metrics=metrics,
        train_episodes=sorted(set(episodes[train_mask].tolist())),
        holdout_episodes=sorted(set(episodes[hold_mask].tolist())),
    )


def _fit_dynamics(model, train, hold, config: FitConfig, gen: torch.Generator, progress: bool):
    """Bootstrapped NLL training with per-member early stopping. Returns history and best holdout MSE [E]."""
    E, n = model.ensemble_size, train["obs"].shape[0]
    device = train["obs"].device
    bootstrap = torch.randint(n, (E, n), generator=gen).to(device)
    params = [p for name, p in model.named_parameters() if not name.startswith("termination")]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)

    x_train = model.input_norm.normalize(torch.cat([train["obs"], model.action_features(train["act"])], -1))
    y_train = model.target_norm.normalize(train["target"])
    x_hold = model.input_norm.normalize(torch.cat([hold["obs"], model.action_features(hold["act"])], -1))
    y_hold = model.target_norm.normalize(hold["target"])

    best_mse = [math.inf] * E
    best_state = copy.deepcopy({k: v for k, v in model.state_dict().items() if not k.startswith("termination")})
    since_improved = 0
    history: dict[str, list[float]] = {"train_nll": [], "holdout_mse": []}
    batches_per_epoch = max(1, math.ceil(n / config.batch_size))
    # Small datasets need more epochs to reach the same number of updates.
    max_epochs = max(config.max_epochs, math.ceil(config.min_updates / batches_per_epoch))
    bar = tqdm(range(max_epochs), desc="fit dynamics", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        order = torch.argsort(torch.rand(E, n, generator=gen), dim=1).to(device)
        epoch_loss = 0.0
        for b in range(batches_per_epoch):
            idx = bootstrap.gather(1, order[:, b * config.batch_size : (b + 1) * config.batch_size])  # [E, bs]
            mean, logvar = model._forward_members(x_train[idx])
            nll = ((mean - y_train[idx]) ** 2 * torch.exp(-logvar) + logvar).mean(dim=(1, 2)).sum()
            bound = config.logvar_bound_weight * (model.max_logvar.sum() - model.min_logvar.sum())
            optimizer.zero_grad(set_to_none=True)
            (nll + bound).backward()
            optimizer.step()
            epoch_loss += nll.item() / E
        model.eval()
        with torch.no_grad():
            mean, _ = model._forward_members(x_hold.unsqueeze(0).expand(E, -1, -1))
            mse = ((mean - y_hold) ** 2).mean(dim=(1, 2)).tolist()
        improved = False
        for m in range(E):
            if mse[m] < best_mse[m] * (1 - 1e-3) or not math.isfinite(best_mse[m]):
                best_mse[m] = mse[m]
                for k, v in model.state_dict().items():
                    if k in best_state and v.dim() > 0 and v.shape[0] == E and "norm" not in k:
                        best_state[k][m] = v[m].detach().clone()
                improved = True
        since_improved = 0 if improved else since_improved + 1
        history["train_nll"].append(epoch_loss / batches_per_epoch)
        history["holdout_mse"].append(float(np.mean(mse)))
        bar.set_postfix(train_nll=f"{history['train_nll'][-1]:.3f}", holdout_mse=f"{history['holdout_mse'][-1]:.4f}")
        if since_improved >= config.patience and (epoch + 1) * batches_per_epoch >= config.min_updates:
            break
    bar.close()
    model.load_state_dict(best_state, strict=False)
    return history, best_mse


def _fit_termination(model, train, hold, config: FitConfig, gen: torch.Generator, progress: bool):
    """Weighted BCE on next observations; early-stopped on holdout balanced accuracy + BCE."""
    y = train["done"]
    positives = float(y.sum())
    history = {"termination_train_bce": [], "termination_holdout_bce": []}
    if positives == 0:
        # Data with no terminal row: never terminate (a large negative bias).
        with torch.no_grad():
            for p in model.termination.parameters():
                p.zero_()
            model.termination[-1].bias.fill_(-20.0)
        return history, {"termination_positives": 0}
    pos_weight = torch.tensor((len(y) - positives) / positives, device=y.device)
    optimizer = torch.optim.Adam(model.termination.parameters(), lr=3e-3, weight_decay=1e-4)
    n = len(y)
    best, best_state, since = math.inf, copy.deepcopy(model.termination.state_dict()), 0
    epochs = max(200, math.ceil(config.min_updates / max(1, math.ceil(n / config.batch_size))))
    bar = tqdm(range(epochs), desc="fit termination", unit="epoch", disable=not progress)
    for _ in bar:
        order = torch.randperm(n, generator=gen).to(y.device)
        total = 0.0
        for b in range(0, n, config.batch_size):
            idx = order[b : b + config.batch_size]
            loss = F.binary_cross_entropy_with_logits(model.termination_logit(train["next_obs"][idx]), y[idx], pos_weight=pos_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        with torch.no_grad():
            hold_loss = F.binary_cross_entropy_with_logits(model.termination_logit(hold["next_obs"]), hold["done"], pos_weight=pos_weight).item()
        history["termination_train_bce"].append(total / n)
        history["termination_holdout_bce"].append(hold_loss)
        bar.set_postfix(train_bce=f"{total / n:.4f}", holdout_bce=f"{hold_loss:.4f}")
        if hold_loss < best * (1 - 1e-3):
            best, best_state, since = hold_loss, copy.deepcopy(model.termination.state_dict()), 0
        else:
            since += 1
            if since >= 4 * config.patience:
                break
    bar.close()
    model.termination.load_state_dict(best_state)
    with torch.no_grad():
        pred = model.termination_logit(hold["next_obs"]) > 0
        truth = hold["done"] > 0.5
        tp = float((pred & truth).sum())
        metrics = {
            "termination_positives": int(positives),
            "termination_holdout_precision": tp / max(1.0, float(pred.sum())),
            "termination_holdout_recall": tp / max(1.0, float(truth.sum())),
        }
    return history, metrics


@torch.no_grad()
def max_disagreement(model: EnsembleWorldModel, data: Transitions, batch: int = 4096) -> float:
    """The largest member disagreement over the logged (state, action) pairs: the scale of
    ``halt_threshold="auto"``."""
    t = _tensors(data, next(model.parameters()).device.type)
    return max(
        float(model.predict(t["obs"][i : i + batch], t["act"][i : i + batch], temperature=0.0, members="mean")["disagreement"].max())
        for i in range(0, len(data), batch)
    )


def observed_bounds(data: Transitions) -> tuple[np.ndarray, np.ndarray]:
    """``[D]`` low/high over every logged observation and next observation (the dream's support
    before its ``bounds_margin``)."""
    flat = np.concatenate([data.observations, data.next_observations]).reshape(2 * len(data), -1)
    return flat.min(0).astype(np.float32), flat.max(0).astype(np.float32)


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
    progress: bool = True,
) -> Path:
    """Fit a dream to logged data and write its checkpoint; the function behind ``learned-envs fit``.

    ``data`` is a :class:`Transitions` or a path any reader accepts. With ``dream_id``, the
    checkpoint also goes to the user's dream folder, so ``dream_id`` is registered at the next
    ``import learned_envs``. ``dream_defaults`` sets the dream's stored knob defaults
    (:class:`DreamSettings`, e.g. ``{"out_of_bounds": "clip"}``). Returns the path written.
    """
    from learned_envs import data as data_io
    from learned_envs.checkpoint import build_metadata, save_checkpoint
    from learned_envs.paths import user_dream_dir

    if out is None and dream_id is None:
        raise ValueError("fit needs an output file (out=...) or a dream id (dream_id=...)")
    if dream_id is not None:
        validate_dream_id(dream_id)
    settings = DreamSettings.resolve({}, dream_defaults or {})  # fail on a bad knob before fitting
    data_path = None
    if not isinstance(data, Transitions):
        data_path = Path(data)
        spaces = _spaces_of(source_env) if source_env else (None, None)
        data = data_io.load(data_path, *spaces)
    source_env = source_env or data.metadata.get("source_env_id")
    config = dataclasses.replace(config or FitConfig(), seed=seed)
    result = fit_world_model(data, config, progress=progress)
    result.metrics["max_train_disagreement"] = max_disagreement(result.model, data)

    max_episode_steps = _time_limit(source_env, max_episode_steps, progress)
    low, high = observed_bounds(data)
    starts = _start_states(data, progress).reshape(-1, low.shape[0])
    metadata = build_metadata(
        model_config=result.model.config.to_json(),
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
        fit={"history": result.history, "metrics": result.metrics, "holdout_episodes": result.holdout_episodes},
    )
    targets = [Path(out)] if out is not None else []
    if dream_id is not None:
        targets.append(user_dream_dir() / f"{dream_id}.safetensors")
    for target in targets:
        save_checkpoint(target, result.model, starts, low, high, metadata)
    return targets[0]


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


def _start_states(data: Transitions, progress: bool) -> np.ndarray:
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


_DREAM_ID = re.compile(r"^[A-Za-z0-9_.\-]+-v\d+$")


def validate_dream_id(dream_id: str) -> None:
    """Dream ids follow Gymnasium's ``Name-vN`` form and become file names, so no slashes."""
    if not _DREAM_ID.match(dream_id):
        raise ValueError(f"dream id {dream_id!r} must look like 'Name-v0' (letters, digits, '_', '.', '-', then -v<N>)")


def _spaces_of(env_id: str) -> tuple[gym.Space, gym.Space]:
    env = gym.make(env_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()

