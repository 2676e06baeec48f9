"""The evaluation's pictures (matplotlib, Agg backend: no display needed). Each function writes one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

# Observation dimension names of a few envs (Hopper: v5's default, without the x position), for axis labels.
OBS_NAMES: dict[str, list[str]] = {
    "CartPole": ["cart position", "cart velocity", "pole angle", "pole angular velocity"],
    "MountainCar": ["position", "velocity"],
    "MountainCarContinuous": ["position", "velocity"],
    "Pendulum": ["cos(theta)", "sin(theta)", "angular velocity"],
    "Acrobot": ["cos(theta1)", "sin(theta1)", "cos(theta2)", "sin(theta2)", "theta1 velocity", "theta2 velocity"],
    "Hopper": ["torso height", "torso angle", "thigh angle", "leg angle", "foot angle", "torso x velocity",
               "torso z velocity", "torso angular velocity", "thigh angular velocity", "leg angular velocity",
               "foot angular velocity"],
}

REAL, MODEL, DREAM, BAD = "#222222", "#1f77b4", "#ff7f0e", "#d62728"


def obs_names(env_id: str | None, dims: int) -> list[str]:
    """Names of the observation dimensions of ``env_id`` (``obs[i]`` when unknown)."""
    base = (env_id or "").split(":")[-1].split("/")[-1].rsplit("-v", 1)[0]
    names = OBS_NAMES.get(base)
    return names if names and len(names) == dims else [f"obs[{i}]" for i in range(dims)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_k_step_error(
    path: Path,
    error: np.ndarray,
    per_dim: np.ndarray,
    names: Sequence[str],
    title: str,
    samples: np.ndarray | None = None,
    clipped: np.ndarray | None = None,
    marks=(1, 10, 50),
    few: int = 30,
) -> Path:
    """err(k) on a log axis, per dimension (thin) and averaged (thick), with 1 data std marked;
    ``clipped``: the average when predictions are clipped to the training bounds, as the dream does;
    k where fewer than ``few`` rollouts reached are shaded (their error is noisy)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    k = np.arange(1, len(error) + 1)
    if samples is not None and (samples < few).any():
        first_few = int(np.argmax(samples < few)) + 1
        ax.axvspan(first_few, len(error), color="0.85", alpha=0.6, lw=0)
        ax.text(first_few, 0.03, f" fewer than {few} rollouts\n reach this far: noisy", transform=ax.get_xaxis_transform(),
                va="bottom", ha="left", fontsize=7, color="0.35")
    for i, name in enumerate(names):
        ax.plot(k, per_dim[:, i], lw=1, alpha=0.75, label=name)
    ax.plot(k, error, color="black", lw=2.5, label="mean over dimensions")
    if clipped is not None:
        ax.plot(k, clipped, color="black", lw=1.5, ls="--", label="mean, clipped to training bounds\n(as the dream steps)")
    for m in marks:
        if m <= len(error) and np.isfinite(error[m - 1]):
            ax.plot(m, error[m - 1], "o", color="black")
            ax.annotate(f"k={m}: {error[m - 1]:.3g}", (m, error[m - 1]), textcoords="offset points", xytext=(6, -14), fontsize=9)
    ax.axhline(1.0, color=BAD, ls=":", lw=1.5, label="1 data std: no better than\nguessing the data's mean")
    ax.set_yscale("log")
    finite = error[np.isfinite(error)]
    ax.set_ylim(top=max(2.0, 1.5 * float(np.nanmax(per_dim))) if finite.size else 2.0)
    ax.set_xlim(1, max(2, len(error)))
    ax.set_xlabel("k: steps predicted open loop (logged actions, no real feedback)")
    ax.set_ylabel("RMSE / data std (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_trajectories(
    path: Path,
    episodes: list[dict[str, Any]],
    names: Sequence[str],
    dream_label: str,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Rows = observation dimensions, columns = episodes: the real trajectory, the model's mean
    replay and the band of the dream's own samples, all under the same logged actions.

    Each entry of ``episodes`` holds ``real [T+1, D]``, ``mean [T+1, D]``, optional
    ``samples [S, T+1, D]`` (NaN after a dream ended) and ``title``. ``bounds``: the training
    data's ``(low, high)``, drawn where in view. The y range follows the real trajectory and the
    dream band, so a diverging model mean leaves the panel rather than squashing the rest.
    """
    plt = _pyplot()
    dims, cols = len(names), len(episodes)
    fig, axes = plt.subplots(dims, cols, figsize=(3.6 * cols + 0.6, 1.9 * dims + 0.8), sharex="col", squeeze=False)
    for c, ep in enumerate(episodes):
        t = np.arange(len(ep["real"]))
        samples = ep.get("samples")
        for r in range(dims):
            ax = axes[r, c]
            if samples is not None:
                with np.errstate(invalid="ignore"), _quiet():
                    lo, hi = np.nanpercentile(samples[:, :, r], [10, 90], axis=0)
                ax.fill_between(t, lo, hi, color=DREAM, alpha=0.25, lw=0, label=f"dream samples, 10-90% ({dream_label})")
                for s in samples[:3]:
                    ax.plot(t, s[:, r], color=DREAM, lw=0.6, alpha=0.6)
                last = np.isfinite(samples[:, :, r]).sum(axis=1) - 1  # each sample's last step
                ended = last < len(t) - 1
                if ended.any():
                    ax.plot(last[ended], samples[ended, last[ended], r], "x", color=BAD, ms=5, mew=1.2,
                            label="a dream sample ends (terminated / halted)")
            ax.plot(t, ep["real"][:, r], color=REAL, lw=1.6, label="real (logged)")
            ax.plot(t, ep["mean"][:, r], color=MODEL, lw=1.6, ls="--", label="model mean, open loop")
            shown = [ep["real"][:, r]] + ([lo, hi] if samples is not None else [])
            with _quiet():
                y0, y1 = np.nanmin(np.concatenate(shown)), np.nanmax(np.concatenate(shown))
            pad = 0.15 * max(y1 - y0, 1e-6)
            ax.set_ylim(y0 - pad, y1 + pad)
            if bounds is not None:
                for edge in (bounds[0][r], bounds[1][r]):
                    if y0 - pad < edge < y1 + pad:
                        ax.axhline(edge, color=BAD, ls=":", lw=1.2, label="edge of the training data")
            ax.grid(True, alpha=0.25)
            if c == 0:
                ax.set_ylabel(names[r], fontsize=9)
            if r == 0:
                ax.set_title(ep["title"], fontsize=9)
        axes[-1, c].set_xlabel("step")
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Dream vs real under the same logged actions", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, path)


class _quiet:
    """Silence numpy's all-NaN-slice warnings (dreams that ended leave NaN columns)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def plot_learning_curves(path: Path, history: dict[str, list[float]]) -> Path | None:
    """The fit's curves against gradient updates, one panel per stage the trainer ran (for the
    ensemble: dynamics, termination): train loss (left) and holdout score (right, log)."""
    stages = [key[: -len("_update")] for key in history if key.endswith("_update") and history[key]]
    if not stages:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(stages), figsize=(5.2 * len(stages), 3.6), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        updates = history[f"{stage}_update"]
        lines = ax.plot(updates, history[f"{stage}_train_loss"], color="C0", label="train loss (left)")
        ax2 = ax.twinx()
        lines += ax2.plot(updates, history[f"{stage}_holdout"], color="C1", label="holdout score (right, log)")
        ax2.set_yscale("symlog" if min(history[f"{stage}_holdout"]) <= 0 else "log")
        ax.set_title(stage, fontsize=10)
        ax.set_xlabel("gradient update")
        ax.grid(True, alpha=0.25)
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8)
    fig.suptitle("Learning curves of the fit (from the checkpoint's metadata)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_transfer(path: Path, rows: list[dict[str, Any]], title: str, reward_threshold: float | None = None) -> Path:
    """Per setting: the agent's mean return in the dream beside its return in the real env."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(rows) + 2), 4))
    x = np.arange(len(rows))
    width = 0.38
    bars = ((-width / 2, "dream", DREAM, "return in the dream"), (width / 2, "real", REAL, "return in the real env"))
    for offset, key, color, label in bars:
        means = [r[f"{key}_return_mean"] for r in rows]
        stds = [r[f"{key}_return_std"] for r in rows]
        ax.bar(x + offset, means, width, yerr=stds, color=color, alpha=0.85, label=label, capsize=3)
        for i, r in enumerate(rows):
            seeds = [s[key] for s in r["per_seed"]]
            ax.plot(np.full(len(seeds), x[i] + offset), seeds, "o", color="white", mec="black", ms=4, zorder=3,
                    label="one seed" if i == 0 and key == "real" else None)
    if reward_threshold is not None:
        ax.axhline(reward_threshold, color=BAD, ls=":", lw=1.2)
        ax.text(x[-1] + 0.5, reward_threshold, "solved", color=BAD, va="bottom", ha="right", fontsize=8)
    ax.set_xticks(x, [r["label"] for r in rows], fontsize=9)
    ax.set_ylabel("mean episode return")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    ax.grid(True, axis="y", alpha=0.25)
    return _save(fig, path)


def plot_score_groups(path: Path, groups: Sequence[dict[str, Any]], title: str, ylabel: str = "D4RL normalised score") -> Path:
    """One panel per group (an env and dataset): each learner's mean score as a bar, each seed's as a
    dot, the group's ``baseline`` (the behaviour policy's score) as a dashed line.

    ``groups``: ``[{"label": str, "scores": {learner: [score per seed]}, "baseline": float | None}]``.
    """
    plt = _pyplot()
    widest = max(len(g["scores"]) for g in groups)
    fig, axes = plt.subplots(1, len(groups), figsize=(max(4.0, 0.9 * widest + 1.5) * len(groups), 4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, group in zip(axes[0], groups):
        learners = list(group["scores"])
        x = np.arange(len(learners))
        means = [float(np.mean(group["scores"][name])) for name in learners]
        ax.bar(x, means, 0.6, color=[colors[i % len(colors)] for i in x], alpha=0.8)
        for i, name in enumerate(learners):
            seeds = group["scores"][name]
            ax.plot(np.full(len(seeds), x[i]), seeds, "o", color="white", mec="black", ms=4, zorder=3,
                    label="one seed" if i == 0 else None)
            ax.annotate(f"{means[i]:.1f}", (x[i], max(means[i], max(seeds))), textcoords="offset points", xytext=(0, 4),
                        ha="center", fontsize=8)
        if group.get("baseline") is not None:
            ax.axhline(group["baseline"], color=BAD, ls="--", lw=1.2, label=f"behaviour policy ({group['baseline']:.1f})")
        ax.set_xticks(x, learners, fontsize=8, rotation=15)
        ax.set_title(group["label"], fontsize=9)
        ax.grid(True, axis="y", alpha=0.25)
        # Below the panel: inside it, the legend hid the tallest bar's label.
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
