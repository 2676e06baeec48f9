"""``evaluate``: how far to trust a dream, measured on logged episodes it never trained on.

Writes ``metrics.json``, ``k_step_error.png``, ``trajectories.png``, ``learning_curves.png`` and,
where the source env's renderer can draw a given state, ``real_vs_dream.gif`` into ``out_dir``,
and prints a summary table.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from learned_envs.data.transitions import Transitions
from learned_envs.evaluation import metrics as M
from learned_envs.evaluation import plots
from learned_envs.evaluation.sources import DreamSource, load_eval_data, resolve

REPORTED_K = (1, 10, 50)


def jsonable(value: Any) -> Any:
    """``value`` with numpy types made Python and NaN/inf made ``None`` (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _dream_settings(source: DreamSource, overrides: dict[str, Any]) -> dict[str, Any]:
    from learned_envs.dream_settings import DreamSettings

    names = DreamSettings.names()
    settings = {k: v for k, v in source.defaults.items() if k in names}
    settings.update(overrides)
    DreamSettings.resolve(source.metadata.get("dream", {}), settings)  # fail fast on a bad knob
    return settings


def _describe(settings: dict[str, Any], defaults: dict[str, Any]) -> str:
    from learned_envs.dream_settings import DreamSettings

    s = DreamSettings.resolve(defaults, settings)
    text = f"temperature {s.temperature:g}, propagation {s.propagation}"
    if s.uncertainty_penalty:
        text += f", penalty {s.uncertainty_penalty:g} x {s.penalty_of}"
        if s.penalty_threshold == "auto":
            text += f" above q{s.penalty_quantile:g} of training disagreement"
        elif s.penalty_threshold:
            text += f" above {s.penalty_threshold:g}"
    if s.halt_threshold == "auto":
        text += f", halt {s.halt_factor:g} x q{s.halt_quantile:g} of training disagreement"
    elif s.halt_threshold is not None:
        text += f", halt {s.halt_threshold}"
    return text


def evaluate(
    checkpoint: str | os.PathLike,
    data: Transitions | str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "runs/eval",
    *,
    horizon: int = 100,
    max_starts: int = 2000,
    plot_episodes: int = 3,
    dream_samples: int = 16,
    video: bool = True,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    verbose: bool = True,
    **dream_kwargs: Any,
) -> dict[str, Any]:
    """Measure a dream's fidelity on held-out logged episodes and write the report to ``out_dir``.

    Args:
        checkpoint: a checkpoint path or a registered dream id.
        data: held-out transitions (a file or :class:`Transitions`), ideally logged by a policy
            other than the one that logged the training data. ``None``: the fit's own holdout
            episodes of the training file recorded in the checkpoint.
        horizon: longest open-loop rollout (the k of err(k)).
        max_starts: at most about this many open-loop rollouts (every row when the data is smaller).
        plot_episodes: episodes drawn in ``trajectories.png`` (the longest ones).
        dream_samples: the dream's own sampled trajectories drawn as a band per episode.
        video: write ``real_vs_dream.gif`` when the source env's renderer can draw a given state.
        dream_kwargs: dream knobs (``temperature``, ``propagation``, ...) for the sampled band;
            the metrics themselves always use the ensemble mean at temperature 0.

    Returns the dict written to ``metrics.json``.
    """
    from learned_envs.checkpoint import load_checkpoint

    if horizon < 1:
        raise ValueError(f"horizon must be at least 1, got {horizon}")
    source = resolve(checkpoint)
    ckpt = load_checkpoint(source.path, device=device)
    data, data_desc = load_eval_data(source, data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = _dream_settings(source, dream_kwargs)
    model, env_id = ckpt.model, source.source_env_id
    dims = int(np.prod(ckpt.observation_space.shape))
    names = plots.obs_names(env_id, dims)

    # The dream's support, as the dream itself computes it from the resolved knobs.
    from learned_envs.dream_settings import DreamSettings

    margin = DreamSettings.resolve(source.metadata.get("dream", {}), settings).bounds_margin
    support_low, support_high = ckpt.bounds(margin)
    std = M.data_std(data)
    one = M.one_step_metrics(model, data, std)
    cover = M.coverage(data, support_low, support_high)
    curve = M.open_loop_curve(model, data, std, None, None, horizon, max_starts, progress)
    clipped = M.open_loop_curve(model, data, std, support_low, support_high, horizon, max_starts, progress)

    bounds = M.episode_bounds(data)
    longest = sorted(range(len(bounds)), key=lambda i: -bounds[i][1])[:plot_episodes]
    episodes = []
    for i in sorted(longest):
        first, length = bounds[i]
        steps = min(length, horizon)
        real, mean = M.replay_episode(model, data, first, steps)
        samples = M.sample_dreams(ckpt, data, first, steps, dream_samples, seed + i, device=device, **settings) if dream_samples else None
        title = f"episode {i}: first {steps} of {length} steps" if steps < length else f"episode {i}: {length} steps"
        episodes.append({"index": i, "length": length, "steps": steps, "real": real, "mean": mean, "samples": samples, "title": title})

    files = {"metrics": "metrics.json"}
    title = f"{source.name}: open-loop error on {Path(data_desc.split(' (')[0]).name} ({curve.starts} rollouts)"
    files["k_step_error"] = plots.plot_k_step_error(
        out / "k_step_error.png", curve.error, curve.per_dim, names, title, curve.samples, clipped.error
    ).name
    bounds_lh = (support_low.cpu().numpy(), support_high.cpu().numpy())
    label = _describe(settings, source.metadata.get("dream", {}))
    files["trajectories"] = plots.plot_trajectories(out / "trajectories.png", episodes, names, label, bounds_lh).name
    history = source.metadata.get("fit", {}).get("history", {})
    learning = plots.plot_learning_curves(out / "learning_curves.png", history)
    if learning is not None:
        files["learning_curves"] = learning.name
    video_note = None
    if video and episodes and env_id:
        from learned_envs.evaluation.video import write_side_by_side_gif

        try:
            files["video"] = write_side_by_side_gif(out / "real_vs_dream.gif", env_id, episodes[0]["real"], episodes[0]["mean"]).name
        except (NotImplementedError, gym.error.Error) as exc:
            video_note = f"no video: {exc}"
    elif video:
        video_note = "no video: the checkpoint names no source env to render with"

    result = {
        "checkpoint": str(source.path),
        "dream_id": source.dream_id,
        "source_env_id": env_id,
        "data": {
            "source": data_desc,
            "transitions": len(data),
            "episodes": data.num_episodes,
            "behaviour_policy": data.metadata.get("behaviour_policy"),
        },
        "training_data": {k: source.metadata.get("dataset", {}).get(k) for k in ("transitions", "episodes", "behaviour_policy")},
        "observation_names": names,
        "data_std": std,
        "one_step": one,
        "coverage": cover,
        "open_loop": {
            "horizon": horizon,
            "rollouts": curve.starts,
            "prediction": "ensemble mean, temperature 0, as the model predicts it (no clipping)",
            "error_at": {str(k): curve.at(k) for k in REPORTED_K if k <= horizon},
            "error": curve.error,
            "error_per_dim": curve.per_dim,
            "samples_per_k": curve.samples,
        },
        "open_loop_clipped": {
            "prediction": "ensemble mean, temperature 0, clipped to the training data's bounds every step, as the dream does",
            "error_at": {str(k): clipped.at(k) for k in REPORTED_K if k <= horizon},
            "error": clipped.error,
            "error_per_dim": clipped.per_dim,
        },
        "plotted_episodes": [{k: ep[k] for k in ("index", "length", "steps")} for ep in episodes],
        "dream_settings_for_samples": settings,
        "fit": {"history": history, "metrics": source.metadata.get("fit", {}).get("metrics", {})},
        "files": files,
        "video_note": video_note,
    }
    result = jsonable(result)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    if verbose:
        print(format_summary(result, out))
    return result


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def format_summary(result: dict[str, Any], out_dir: Path | None = None) -> str:
    """The printed table: one line per headline figure."""
    one, ol, term = result["one_step"], result["open_loop"], result["one_step"]["termination"]
    data = result["data"]
    clip_at = result["open_loop_clipped"]["error_at"]
    rows = [(f"open-loop error at k={k} (data std)", f"{_fmt(v)} (clipped as the dream does: {_fmt(clip_at[k])})")
            for k, v in ol["error_at"].items()]
    cover = result["coverage"]
    worst = int(np.argmax(cover["outside_fraction_per_dim"]))
    most = f" (most: {result['observation_names'][worst]}, {cover['outside_fraction_per_dim'][worst]:.1%})"
    outside = f"{cover['outside_fraction']:.1%}" + (most if cover["outside_fraction"] else "")
    rows.append(("held-out rows outside the training bounds", outside))
    rows += [(f"one-step RMSE/std: {name}", _fmt(v)) for name, v in zip(result["observation_names"], one["rmse_over_std"])]
    rows += [
        ("reward RMSE (one step)", f"{_fmt(one['reward_rmse'])} (reward std {_fmt(one['reward_std'])})"),
        ("termination precision", f"{_fmt(term['precision'], '.2f')} ({term['predicted_terminations']} predicted)"),
        ("termination recall", f"{_fmt(term['recall'], '.2f')} ({term['true_terminations']} real)"),
        ("calibration: Spearman(disagreement, error)", _fmt(one["calibration"]["spearman_disagreement_vs_error"], ".2f")),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        f"{result['dream_id'] or result['checkpoint']} evaluated on {data['source']}",
        f"  {data['transitions']} transitions, {data['episodes']} episodes; {ol['rollouts']} open-loop rollouts up to k={ol['horizon']}",
        f"  {'metric':<{width}}  value",
        f"  {'-' * width}  -----",
    ]
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    if out_dir is not None:
        lines.append(f"wrote {', '.join(result['files'].values())} to {out_dir}")
    if result.get("video_note"):
        lines.append(result["video_note"])
    return "\n".join(lines)
