"""Evaluation: fidelity metrics on held-out data, the report's files, transfer, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from learned_envs.checkpoint import load_checkpoint
from learned_envs.evaluation import evaluate, transfer
from learned_envs.evaluation.metrics import rank, spearman
from learned_envs.evaluation.transfer import sweep_settings
from learned_envs.training import evaluate_in_real, train_in_dream
from tests.helpers import PNG_SIGNATURE

HORIZON = 20


@pytest.fixture(scope="module")
def heldout_npz(tmp_path_factory) -> Path:
    """Transitions the small dream never saw: another seed of the package's own ``collect``."""
    from learned_envs.data.collecting import collect

    path = tmp_path_factory.mktemp("heldout") / "heldout.npz"
    collect("CartPole-v1", 300, out=path, seed=7, progress=False)
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory, small_checkpoint, heldout_npz) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("report")
    result = evaluate(small_checkpoint, heldout_npz, out, horizon=HORIZON, dream_samples=4, progress=False, verbose=False)
    return result, out


def test_metrics_json_has_every_section(report):
    result, out = report
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == result
    for key in ("one_step", "open_loop", "open_loop_clipped", "coverage", "fit", "files", "data", "data_std"):
        assert key in on_disk, key
    assert on_disk["data"]["transitions"] == 300
    assert on_disk["observation_names"] == ["cart position", "cart velocity", "pole angle", "pole angular velocity"]
    assert set(on_disk["open_loop"]["error_at"]) == {"1", "10"}  # 50 > horizon: not reported
    assert on_disk["fit"]["history"]["dynamics_holdout"], "the fit's learning curve is carried into the report"


def test_open_loop_error_is_finite_and_grows(report):
    ol = report[0]["open_loop"]
    error = np.array(ol["error"], dtype=float)
    assert error.shape == (HORIZON,)
    assert np.isfinite(error).all() and (error > 0).all()
    assert error[-5:].mean() > error[:3].mean(), "open-loop error should grow with the horizon"
    assert np.diff(error[:10]).min() > -0.05 * error[:10].max(), "early error should not fall"
    samples = np.array(ol["samples_per_k"])
    assert samples[0] == 300 and (np.diff(samples) <= 0).all(), "every row starts a rollout; fewer reach far"
    assert ol["error_at"]["1"] == pytest.approx(error[0]) and ol["error_at"]["10"] == pytest.approx(error[9])


def test_first_open_loop_step_is_the_one_step_error(report):
    """With every row a rollout start, err(1) per dimension is the one-step RMSE / std."""
    result = report[0]
    per_dim_k1 = np.array(result["open_loop"]["error_per_dim"][0])
    assert per_dim_k1 == pytest.approx(np.array(result["one_step"]["rmse_over_std"]), rel=1e-3)


def test_one_step_metrics_are_sane(report, heldout_npz, small_checkpoint):
    from learned_envs.data import load

    data = load(heldout_npz)
    one = report[0]["one_step"]
    assert len(one["rmse_over_std"]) == 4 and all(0 < v < 1 for v in one["rmse_over_std"]), one["rmse_over_std"]
    assert 0 <= one["reward_rmse"] < 0.5  # CartPole pays 1 every step
    term = one["termination"]
    assert term["true_terminations"] == int(data.terminations.sum()) > 0
    # The report's precision and recall are the head's, read on the real next observations.
    model = load_checkpoint(small_checkpoint).model
    with torch.no_grad():
        fires = (model.termination_logit(torch.as_tensor(data.next_observations)) > 0).numpy().reshape(-1)
    hits = int((fires & data.terminations).sum())
    assert term["recall"] == pytest.approx(hits / data.terminations.sum())
    assert term["precision"] == pytest.approx(hits / fires.sum()) and term["predicted_terminations"] == int(fires.sum())
    assert term["recall"] >= 0.5, "CartPole's terminations (pole or cart past a threshold) are easy to learn from random play"
    # The ensemble knows where it is wrong: rows it disagrees on more are rows it errs on more.
    assert one["calibration"]["spearman_disagreement_vs_error"] > 0.2
    assert report[0]["coverage"]["outside_fraction"] == pytest.approx(0.0, abs=0.05)  # same policy as training


def test_pngs_are_valid_images(report):
    import matplotlib.image as mpimg

    result, out = report
    for key in ("k_step_error", "trajectories", "learning_curves"):
        path = out / result["files"][key]
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300, (path, image.shape)
        assert image[..., :3].std() > 0.05, f"{path} is blank"


def test_gif_has_equal_frames_side_by_side(report):
    import imageio.v2 as imageio

    result, out = report
    frames = imageio.mimread(out / result["files"]["video"])
    assert len(frames) == result["plotted_episodes"][0]["steps"] + 1  # the start, then one per replayed step
    shapes = {f.shape[:2] for f in frames}
    assert len(shapes) == 1, shapes
    height, width = shapes.pop()
    assert width > 2 * height, "real and dream side by side"
    assert not np.array_equal(frames[0], frames[-1]), "the cart moves"


def test_evaluate_defaults_to_the_fits_holdout_episodes(small_dream_id, small_checkpoint, tmp_path):
    from learned_envs.checkpoint import read_metadata

    result = evaluate(small_dream_id, None, tmp_path, horizon=5, dream_samples=0, video=False, progress=False, verbose=False)
    holdout = read_metadata(small_checkpoint)["fit"]["holdout_episodes"]
    assert result["dream_id"] == small_dream_id
    assert "holdout episodes" in result["data"]["source"]
    assert result["data"]["episodes"] == len(holdout)
    assert "video" not in result["files"]


def test_evaluate_names_what_it_cannot_find(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a checkpoint file nor a registered dream"):
        evaluate("No-Such-Dream-v0", None, tmp_path, progress=False, verbose=False)
    with pytest.raises(ValueError, match="horizon"):
        evaluate("No-Such-Dream-v0", None, tmp_path, horizon=0)


def test_rank_and_spearman_match_their_definitions():
    assert rank(np.array([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]
    x = np.arange(50.0)
    assert spearman(x, x**3)[0] == pytest.approx(1.0)
    assert spearman(x, -np.exp(x / 10))[0] == pytest.approx(-1.0)
    assert spearman(x, np.ones(50))[0] is None
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(size=200)
    ra, rb = rank(a), rank(b)
    assert spearman(a, b)[0] == pytest.approx(np.corrcoef(ra, rb)[0, 1])


def test_sweep_settings_are_the_grid():
    grid = sweep_settings({"temperature": [0.0, 1.0], "propagation": ["random", "mean"]})
    assert len(grid) == 4 and {"temperature": 1.0, "propagation": "mean"} in grid
    assert sweep_settings(None) == [{}]
    with pytest.raises(ValueError, match="list of values"):
        sweep_settings({"temperature": 1.0})


def test_transfer_reports_a_row_per_setting(small_checkpoint, tmp_path):
    result = transfer(small_checkpoint, "PPO", steps=2_000, sweep={"temperature": [0.0]}, seeds=1, episodes=3, out_dir=tmp_path,
                      progress=False, verbose=False)
    assert [row["label"] for row in result["rows"]] == ["temperature=0"]
    row = result["rows"][0]
    (run,) = row["per_seed"]
    assert row["real_return_mean"] == run["real"] and row["dream_return_mean"] == run["dream"] and row["real_return_std"] == 0
    # The row reports this setting's agent scored in the real env: retrained alike, it scores the same.
    agent = train_in_dream(result["dream_id"], 2_000, "PPO", seed=0, progress=False, temperature=0.0)
    assert run["real"] == pytest.approx(evaluate_in_real(agent, "CartPole-v1", 3, seed=10_000)[0])
    assert row["gap_mean"] == pytest.approx(row["dream_return_mean"] - row["real_return_mean"])
    assert result["dream_id"].startswith("LearnedEnvsEval-") and result["source_env_id"] == "CartPole-v1"
    assert json.loads((tmp_path / "transfer.json").read_text())["rows"][0]["label"] == "temperature=0"
    assert (tmp_path / "transfer.png").read_bytes()[:8] == PNG_SIGNATURE


def test_transfer_rejects_an_unknown_knob_before_training(small_checkpoint):
    with pytest.raises(TypeError, match="unknown dream option"):
        transfer(small_checkpoint, sweep={"temprature": [0.0]}, steps=10**9, verbose=False)


def _cli(*args, home: Path):
    env = {**os.environ, "LEARNED_ENVS_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "learned_envs.cli", "evaluate", *args], capture_output=True, text=True, env=env)


def test_cli_evaluate_writes_the_report(small_checkpoint, heldout_npz, tmp_path):
    out = tmp_path / "report"
    done = _cli(str(small_checkpoint), "--data", str(heldout_npz), "--out", str(out), "--horizon", "12", "--no-video", home=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "open-loop error at k=1" in done.stdout and "termination recall" in done.stdout
    assert "open-loop rollouts" in done.stderr  # the progress bar
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["open_loop"]["error"]) == 12 and not (out / "real_vs_dream.gif").exists()


def test_cli_evaluate_bad_options_exit_with_clear_errors(small_checkpoint, tmp_path):
    from learned_envs.cli import main, parse_sweep

    assert parse_sweep(["temperature=0,0.5", "propagation=mean", "halt_threshold=none"]) == {
        "temperature": [0.0, 0.5], "propagation": ["mean"], "halt_threshold": [None]}
    done = _cli(str(small_checkpoint), "--transfer", "PPO", "--sweep", "temprature=0,1", home=tmp_path)
    assert done.returncode == 2 and "unknown dream knob 'temprature'" in done.stderr
    assert main(["evaluate", str(small_checkpoint), "--sweep", "temperature=0"]) == 2  # a sweep without --transfer
    assert main(["evaluate", str(tmp_path / "missing.safetensors")]) == 2
