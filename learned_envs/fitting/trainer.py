"""The trainer: one early-stopping loop that fits every stage of any :class:`WorldModel`.

For each stage the model names (the ensemble: dynamics, then termination):
- each of its M members draws its own minibatch every update from its own bootstrap of the
  training rows (a ``[M, N]`` index table, never a copy of the data);
- every ``eval_every`` updates each member is scored on a fixed holdout sample; a member that
  improved is snapshotted (the model owns its snapshots);
- the stage stops when no member has improved for ``patience`` updates (after ``min_updates``),
  at ``max_updates``, or when the fit's ``max_seconds`` run out; every member goes back to its
  best snapshot.
After the dynamics stage the ``num_elites`` best members are kept. A non-finite loss stops the
fit with a :class:`FitError` rather than writing a broken dream.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from learned_envs.data.spaces import flat_dim
from learned_envs.data.transitions import Transitions
from learned_envs.fitting.config import FitConfig, FitError
from learned_envs.fitting.split import split_by_episode, to_batch
from learned_envs.models.base import Batch, WorldModel, family_of_config


@dataclass
class FitResult:
    model: WorldModel
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    train_episodes: list[int] = field(default_factory=list)
    holdout_episodes: list[int] = field(default_factory=list)


@dataclass
class StageBudget:
    """How long one stage may train, in updates and (shared across stages) seconds."""

    batch_size: int
    learning_rate: float
    weight_decay: float
    max_updates: int
    min_updates: int
    eval_every: int
    patience: int
    improvement: float
    lr_decays: int
    lr_decay_factor: float
    deadline: float | None  # time.perf_counter() value, or None


def model_config_for(data: Transitions, config: FitConfig):
    """``config.model`` with the data's observation and action sizes filled in."""
    discrete = isinstance(data.action_space, gym.spaces.Discrete)
    return dataclasses.replace(
        config.model,
        obs_dim=flat_dim(data.observation_space),
        action_dim=int(data.action_space.n) if discrete else flat_dim(data.action_space),
        discrete_actions=discrete,
    )


def fit_world_model(data: Transitions, config: FitConfig | None = None, progress: bool = True,
                    init: WorldModel | None = None) -> FitResult:
    """Fit a world model to ``data``: a new one of ``config.model``'s family, or, warm-started,
    ``init`` (its weights and normalisers kept, every member trained further).

    The same ``config.seed`` gives the same model; the caller's global torch RNG and thread
    count are left as they were.
    """
    config = config or FitConfig()
    config.validate()
    threads = torch.get_num_threads()
    # Parameter initialisation draws from the global CPU generator; seeding it on a fork keeps the
    # fit repeatable without resetting the caller's stream. Only the CPU generator is seeded
    # (torch.manual_seed would also queue a seed for every CUDA device), so CUDA needs no fork.
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(config.seed)
        try:
            return _fit_seeded(data, config, progress, init)
        finally:
            torch.set_num_threads(threads)


def _fit_seeded(data: Transitions, config: FitConfig, progress: bool, init: WorldModel | None) -> FitResult:
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator(device=config.device).manual_seed(config.seed)
    train_mask, hold_mask = split_by_episode(data, config.holdout_fraction, rng)
    train_rows = int(train_mask.sum())
    cfg = config.resolved(train_rows, warm_start=init is not None)
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    every = to_batch(data, device)
    train = every.index(torch.as_tensor(np.flatnonzero(train_mask), device=device))
    holdout_source = "held-out episodes" if data.num_episodes > 1 else "the held-out tail of the single episode"
    if hold_mask.any():
        hold_rows = np.flatnonzero(hold_mask)
        if hold_rows.size > cfg.holdout_rows:  # a fixed sample: early stopping compares like with like
            hold_rows = np.sort(rng.choice(hold_rows, size=cfg.holdout_rows, replace=False))
        hold = every.index(torch.as_tensor(hold_rows, device=device))
    else:
        holdout_source = f"the training rows (only {len(data)} rows in one episode: too few to hold any out)"
        hold = train
    del every

    if init is None:
        model = family_of_config(cfg.model)(model_config_for(data, cfg)).to(device)
        model.prepare(train)
        fresh: frozenset[str] = frozenset()
    else:
        model = init.to(device)
        fresh = model.prepare(train, keep_normalizers=True)  # stages drawn afresh get a cold fit's budget
    cold = config.resolved(train_rows) if fresh else cfg
    stages = model.fit_stages(train)
    deadline = None if cfg.max_seconds is None else start + cfg.max_seconds
    history: dict[str, list[float]] = {}
    stage_metrics: dict[str, Any] = {}
    for stage in stages:
        dynamics = stage == stages[0]
        stage_cfg = cold if stage in fresh else cfg
        budget = StageBudget(
            batch_size=stage_cfg.batch_size,
            learning_rate=stage_cfg.learning_rate if dynamics else stage_cfg.termination_learning_rate,
            weight_decay=stage_cfg.weight_decay if dynamics else stage_cfg.termination_weight_decay,
            max_updates=stage_cfg.max_updates if dynamics else stage_cfg.termination_max_updates,
            min_updates=min(stage_cfg.min_updates, stage_cfg.max_updates if dynamics else stage_cfg.termination_max_updates),
            eval_every=stage_cfg.eval_every,
            patience=stage_cfg.patience,
            improvement=stage_cfg.improvement,
            lr_decays=stage_cfg.lr_decays,
            lr_decay_factor=stage_cfg.lr_decay_factor,
            deadline=deadline,
        )
        best, stage_history = train_stage(model, stage, train, hold, budget, gen, progress)
        model.finish_stage(stage, [train] if hold is train else [train, hold])
        history.update(stage_history)
        stage_metrics[stage] = best
        if dynamics:
            elites = torch.argsort(best)[: min(cfg.num_elites, model.num_members)]
            stage_metrics["elites"] = elites
            model.keep_members(elites.to(device))
    model.eval()
    _check_finite_weights(model)

    elite_scores = stage_metrics[stages[0]][stage_metrics["elites"]]
    metrics: dict[str, Any] = {
        "holdout_mse_per_member": [float(v) for v in elite_scores],
        "holdout_mse": float(elite_scores.mean()),
        **termination_metrics(model, train, hold),
        "train_rows": train_rows,
        "holdout_rows": int(hold_mask.sum()),
        "holdout": holdout_source,
        "warm_start": init is not None,
        "fit_seconds": round(time.perf_counter() - start, 2),
        "fit_config": cfg.to_json(),
    }
    episodes = data.episode_index()
    return FitResult(
        model=model,
        history=history,
        metrics=metrics,
        train_episodes=sorted(set(episodes[train_mask].tolist())),
        holdout_episodes=sorted(set(episodes[hold_mask].tolist())),
    )


def train_stage(model: WorldModel, stage: str, train: Batch, hold: Batch, budget: StageBudget,
                gen: torch.Generator, progress: bool) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """Train one stage with per-member early stopping; returns its best holdout scores ``[M]``
    and its history (train loss and holdout score per evaluation)."""
    M, n, device = model.stage_members(stage), len(train), train.obs.device
    # Each member's bootstrap: n row indices drawn with replacement, as int32 ([M, N], 4 bytes a row).
    bootstrap = torch.randint(n, (M, n), generator=gen, device=device, dtype=torch.int32) if M > 1 else None
    strata = model.strata(train, stage)
    if strata is not None:  # equal shares of each group in every minibatch (instead of the bootstrap)
        share = max(1, budget.batch_size // len(strata))
    optimizer = torch.optim.AdamW(list(model.stage_parameters(stage)), lr=budget.learning_rate, weight_decay=budget.weight_decay)
    best = torch.full((M,), math.inf, device=device)
    history: dict[str, list[float]] = {f"{stage}_train_loss": [], f"{stage}_holdout": [], f"{stage}_update": []}
    last_improved, decays_left = 0, budget.lr_decays
    bar = tqdm(total=budget.max_updates, desc=f"fit {stage}", unit="update", disable=not progress, mininterval=0.5)
    update = 0
    for update in range(1, budget.max_updates + 1):
        model.train()
        if strata is not None:
            rows = torch.cat([group[torch.randint(len(group), (M, share), generator=gen, device=device)] for group in strata], dim=1)
        else:
            draw = torch.randint(n, (M, budget.batch_size), generator=gen, device=device)
            rows = bootstrap.gather(1, draw.to(torch.int32)).long() if bootstrap is not None else draw
        loss = model.loss(train.index(rows), stage)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        if update % budget.eval_every and update != budget.max_updates:
            continue
        model.eval()
        score = model.score(hold, stage)
        if not torch.isfinite(loss).all() or not torch.isfinite(score).all():
            bar.close()
            raise FitError(f"fitting the {stage} diverged at update {update} (non-finite loss or holdout score): the data's "
                           "values are too large or too varied to learn; rescale them (e.g. rewards) and fit again")
        improved = (score < best * (1 - budget.improvement)) | ~torch.isfinite(best)
        if improved.any():
            best = torch.where(improved, score, best)
            model.snapshot(stage, improved)
            last_improved = update
        history[f"{stage}_train_loss"].append(float(loss.detach().mean()))
        history[f"{stage}_holdout"].append(float(score.mean()))
        history[f"{stage}_update"].append(update)
        bar.update(update - bar.n)
        bar.set_postfix(holdout=f"{float(score.mean()):.4g}")
        stalled = update - last_improved
        if decays_left and stalled >= budget.patience // 2:
            for group in optimizer.param_groups:
                group["lr"] *= budget.lr_decay_factor
            decays_left, last_improved = decays_left - 1, update
            history.setdefault(f"{stage}_lr_cut_at", []).append(update)
        out_of_patience = stalled >= budget.patience and not decays_left and update >= budget.min_updates
        out_of_time = (budget.deadline is not None and time.perf_counter() > budget.deadline
                       and update >= min(budget.min_updates, budget.eval_every))
        if out_of_patience or out_of_time:
            break
    bar.close()
    model.restore(stage)
    history[f"{stage}_updates"] = [update]
    return best, history


@torch.no_grad()
def termination_metrics(model: WorldModel, train: Batch, hold: Batch) -> dict[str, Any]:
    """Terminal rows seen, and one-step termination precision/recall on the holdout."""
    positives = int(train.terminated.sum())
    if not positives:
        return {"termination_positives": 0}
    # One step of the whole model (the ensemble mean from each logged state), as a dream would end it.
    pred = model.predict(hold.obs, hold.action, temperature=0.0, members="mean").termination_prob > 0.5
    truth = hold.terminated > 0.5
    tp = float((pred & truth).sum())
    return {
        "termination_positives": positives,
        "termination_holdout_precision": tp / max(1.0, float(pred.sum())),
        "termination_holdout_recall": tp / max(1.0, float(truth.sum())),
    }


def _check_finite_weights(model: WorldModel) -> None:
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise FitError(f"the fitted model's '{name}' is not finite: the data's values are too large or too varied to learn")
