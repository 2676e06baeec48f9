"""Fidelity metrics of a world model on logged transitions it did not train on.

Every error is in units of the evaluation data's standard deviation, per observation dimension,
so that dimensions of different scales can be averaged and models compared across envs.
All predictions here are the ensemble mean at temperature 0 (``members="mean"``): the model's
best guess, not one of its samples. Open-loop rollouts are measured as the model predicts them and,
separately, clipped to the bounds seen in the training data, as the dream clips them.

Shapes: N rows, D = flat observation size, B = rollouts stepped together, H = horizon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from learned_envs.data.transitions import Transitions

CHUNK = 4096  # rows per model call


def data_std(data: Transitions) -> np.ndarray:
    """``[D]`` per-dimension std of the logged observations (a floor keeps constant dims finite)."""
    obs = data.observations.reshape(len(data), -1).astype(np.float64)
    return np.maximum(obs.std(axis=0), 1e-6)


def _predict_mean(model, state: torch.Tensor, action: torch.Tensor):
    """The ensemble-mean :class:`~learned_envs.models.base.Prediction` from observations ``state``,
    with ``next_state`` decoded back to observations."""
    out = model.predict(model.encode(state), action, temperature=0.0, members="mean", uncertainty=True)
    out.next_state = model.decode(out.next_state)
    return out


def _as_tensors(data: Transitions, rows: np.ndarray | slice, device) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(data.rewards[rows])
    obs = torch.as_tensor(data.observations[rows].reshape(n, -1), dtype=torch.float32, device=device)
    act = torch.as_tensor(data.actions[rows], device=device)
    return obs, act


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (``scipy.stats.rankdata`` 'average')."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = 0.5 * (s + e - 1) + 1.0
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float | None, str]:
    """Spearman rank correlation and the method used; ``None`` when either input is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, "undefined"
    try:
        from scipy.stats import spearmanr
    except ImportError:
        rx, ry = rank(x), rank(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        return float((rx * ry).sum() / np.sqrt((rx**2).sum() * (ry**2).sum())), "numpy ranks"
    return float(spearmanr(x, y).statistic), "scipy.stats.spearmanr"


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def one_step_metrics(model, data: Transitions, std: np.ndarray) -> dict[str, Any]:
    """One-step errors of the mean prediction from every logged ``(obs, action)``.

    Returns ``rmse_over_std [D]`` and its mean, ``reward_rmse``, termination precision/recall
    (the learned head read on the *real* next observations, probability > 0.5), and the Spearman
    correlation between the ensemble's disagreement and each row's actual error (does the model
    know where it is wrong?).
    """
    device = next(model.parameters()).device
    n = len(data)
    preds, rewards, disagreement, term_prob = [], [], [], []
    for lo in range(0, n, CHUNK):
        obs, act = _as_tensors(data, slice(lo, lo + CHUNK), device)
        out = _predict_mean(model, obs, act)
        nxt = torch.as_tensor(data.next_observations[lo : lo + CHUNK].reshape(len(obs), -1), dtype=torch.float32, device=device)
        with torch.no_grad():
            term_prob.append(torch.sigmoid(model.termination_logit(nxt)).cpu().numpy())
        preds.append(out.next_state.cpu().numpy())
        rewards.append(out.reward.cpu().numpy())
        disagreement.append(out.disagreement.cpu().numpy())
    pred = np.concatenate(preds).astype(np.float64)
    real = data.next_observations.reshape(n, -1).astype(np.float64)
    err = (pred - real) / std
    rmse_dim = np.sqrt((err**2).mean(axis=0))
    row_error = np.sqrt((err**2).mean(axis=1))
    reward_err = np.concatenate(rewards).astype(np.float64) - data.rewards.astype(np.float64)
    predicted = np.concatenate(term_prob) > 0.5
    actual = data.terminations.astype(bool)
    tp = int((predicted & actual).sum())
    rho, method = spearman(np.concatenate(disagreement), row_error)
    return {
        "rmse_over_std": rmse_dim.tolist(),
        "mean_rmse_over_std": float(rmse_dim.mean()),
        "reward_rmse": float(np.sqrt((reward_err**2).mean())),
        "reward_std": float(data.rewards.std()),
        "termination": {
            "threshold": 0.5,
            "precision": _ratio(tp, int(predicted.sum())),
            "recall": _ratio(tp, int(actual.sum())),
            "true_terminations": int(actual.sum()),
            "predicted_terminations": int(predicted.sum()),
        },
        "calibration": {"spearman_disagreement_vs_error": rho, "method": method, "rows": n},
    }


@dataclass
class OpenLoopCurve:
    """err(k) for k = 1..H: per-dimension RMSE over every rollout that reached step k, in data std."""

    per_dim: np.ndarray  # [H, D]
    samples: np.ndarray  # [H] rollouts that reached step k
    starts: int  # rollouts started

    @property
    def error(self) -> np.ndarray:
        """``[H]``: the per-dimension errors averaged over dimensions."""
        return self.per_dim.mean(axis=1)

    def at(self, k: int) -> float | None:
        if k < 1 or k > len(self.samples) or self.samples[k - 1] == 0:
            return None
        return float(self.error[k - 1])


def rollout_starts(data: Transitions, max_starts: int) -> tuple[np.ndarray, np.ndarray]:
    """Start rows of the open-loop rollouts and the steps left in their episode.

    Every episode start, plus evenly spaced rows of the rest so that at most about ``max_starts``
    rollouts run (all rows when the data is small).
    """
    episode = data.episode_index()
    first = np.r_[True, episode[1:] != episode[:-1]]
    last_row = np.flatnonzero(data.episode_ends)  # last row of each episode
    remaining = last_row[episode] - np.arange(len(data)) + 1  # steps with logged actions from row t
    rows = np.arange(len(data))
    if len(data) > max_starts:
        spaced = np.unique(np.linspace(0, len(data) - 1, max_starts).round().astype(np.int64))
        rows = np.union1d(spaced, np.flatnonzero(first))
    return rows, remaining[rows]


def coverage(data: Transitions, obs_low: torch.Tensor, obs_high: torch.Tensor) -> dict[str, Any]:
    """How much of ``data`` lies outside the bounds the model saw in training (where a dream
    clips, and by default halts): per dimension and for any dimension."""
    obs = data.observations.reshape(len(data), -1)
    low, high = obs_low.cpu().numpy(), obs_high.cpu().numpy()
    outside = (obs < low) | (obs > high)
    return {
        "outside_fraction_per_dim": outside.mean(axis=0).tolist(),
        "outside_fraction": float(outside.any(axis=1).mean()),
        "training_low": low.tolist(),
        "training_high": high.tolist(),
    }


def open_loop_curve(
    model,
    data: Transitions,
    std: np.ndarray,
    obs_low: torch.Tensor | None = None,
    obs_high: torch.Tensor | None = None,
    horizon: int = 100,
    max_starts: int = 2000,
    progress: bool = True,
) -> OpenLoopCurve:
    """Replay the logged actions through the model from many logged states, ``horizon`` steps at most.

    A rollout from row t contributes to err(k) for every k up to the steps left in its episode.
    With ``obs_low``/``obs_high``, every predicted state is clipped to them, as the dream does.
    """
    device = next(model.parameters()).device
    starts, remaining = rollout_starts(data, max_starts)
    d = std.shape[0]
    sq = np.zeros((horizon, d))
    count = np.zeros(horizon, dtype=np.int64)
    flat_next = data.next_observations.reshape(len(data), -1)
    clip = obs_low is not None and obs_high is not None
    low, high = (obs_low.to(device), obs_high.to(device)) if clip else (None, None)
    chunks = range(0, len(starts), CHUNK)
    desc = f"open-loop rollouts ({len(starts)} starts{', clipped' if clip else ''})"
    bar = tqdm(total=horizon * len(chunks), desc=desc, unit="step", disable=not progress)
    for lo in chunks:
        rows, left = starts[lo : lo + CHUNK], remaining[lo : lo + CHUNK]
        state, _ = _as_tensors(data, rows, device)
        for k in range(1, horizon + 1):
            active = left >= k
            bar.update(1)
            if not active.all():
                keep = torch.as_tensor(active, device=device)
                rows, left, state = rows[active], left[active], state[keep]
            if len(rows) == 0:
                bar.update(horizon - k)
                break
            act = torch.as_tensor(data.actions[rows + k - 1], device=device)
            state = _predict_mean(model, state, act).next_state
            if clip:
                state = torch.maximum(torch.minimum(state, high), low)
            err = (state.cpu().numpy().astype(np.float64) - flat_next[rows + k - 1]) / std
            sq[k - 1] += (err**2).sum(axis=0)
            count[k - 1] += len(rows)
    bar.close()
    with np.errstate(invalid="ignore", divide="ignore"):
        per_dim = np.sqrt(sq / count[:, None])
    return OpenLoopCurve(per_dim=per_dim, samples=count, starts=len(starts))


def episode_bounds(data: Transitions) -> list[tuple[int, int]]:
    """``(first_row, length)`` of every episode, in order."""
    ends = np.flatnonzero(data.episode_ends)
    firsts = np.r_[0, ends[:-1] + 1]
    return [(int(f), int(e - f + 1)) for f, e in zip(firsts, ends)]


def replay_episode(model, data: Transitions, first: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Real and mean-model trajectories ``[length + 1, D]`` of one logged episode under its logged actions."""
    device = next(model.parameters()).device
    obs = data.observations.reshape(len(data), -1)
    real = np.concatenate([obs[first : first + 1], data.next_observations[first : first + length].reshape(length, -1)])
    state, _ = _as_tensors(data, slice(first, first + 1), device)
    dream = [state.cpu().numpy()[0]]
    for t in range(first, first + length):
        act = torch.as_tensor(data.actions[t : t + 1], device=device)
        state = _predict_mean(model, state, act).next_state
        dream.append(state.cpu().numpy()[0])
    return real, np.stack(dream)


def sample_dreams(
    checkpoint, data: Transitions, first: int, length: int, samples: int = 16, seed: int = 0, **dream_kwargs: Any
) -> np.ndarray:
    """``[samples, length + 1, D]`` trajectories of the dream itself (its own noise, propagation and
    halting, as an agent meets it) from the episode's first observation under its logged actions.

    Steps after a dream ended (terminated or halted) are NaN.
    """
    from learned_envs.dreams.core import DreamCore

    core = DreamCore(checkpoint, num_envs=samples, **dream_kwargs)
    core.seed(np.random.default_rng(seed))
    start = data.observations[first].reshape(1, -1)
    core.reset_rows(initial_observations=start)
    out = np.full((samples, length + 1, start.shape[1]), np.nan)
    out[:, 0] = start
    alive = np.ones(samples, dtype=bool)
    for t in range(length):
        action = np.repeat(data.actions[first + t][None], samples, axis=0)
        batch = core.step(action)
        out[alive, t + 1] = batch.observations.reshape(samples, -1)[alive]
        alive &= ~(batch.terminated | batch.truncated)
        if not alive.any():
            break
    return out
