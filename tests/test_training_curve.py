"""benchmarks/training_curve.py: checkpoints along a run in a dream, each scored in the real env."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from learned_envs.data import save
from learned_envs.data.collecting import collect, load_sb3_agent
from learned_envs.evaluation.metrics import spearman
from learned_envs.fitting import FitConfig, fit
from learned_envs.training import evaluate_in_real
from tests.helpers import PNG_SIGNATURE, TINY_FIT, load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def curve():
    return load_benchmark("training_curve")


@pytest.fixture(scope="module")
def medium_dream(tmp_path_factory):
    """400 random Pendulum-v1 transitions and a tiny dream fitted on them with the offline-medium preset."""
    folder = tmp_path_factory.mktemp("curve")
    path = save(collect("Pendulum-v1", 400, seed=9, progress=False), folder / "pendulum.npz")
    dream = fit(path, folder / "dream.safetensors", source_env="Pendulum-v1", config=FitConfig(**TINY_FIT),
                preset="offline-medium", reset_states=300, progress=False)
    return path, dream


def test_cli_saves_scores_and_judges_each_checkpoint(curve, medium_dream, tmp_path):
    data, dream = medium_dream
    out, plot = tmp_path / "curve.json", tmp_path / "curve.png"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "training_curve.py"), str(dream), "--data", str(data),
                           "--steps", "1600", "--every", "500", "--clone-behaviour", "20", "--hold-actor", "600",
                           "--anchor", "0.5", "--anchor-beta", "0", "--episodes", "1", "--judge", str(dream),
                           "--judge-temperature", "0", "--judge-episodes", "2", "--workdir", str(tmp_path / "ck"),
                           "--out", str(out), "--plot", str(plot)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["behaviour_start"] == {"clone_steps": 20, "hold_steps": 600, "anchor": 0.5, "anchor_beta": 0.0}
    steps = [row["steps"] for row in result["rows"]]
    # SAC in the recipe steps 16 dreams at once: checkpoints at the first multiple of 16 past each 500, then the last.
    assert steps == [512, 1008, 1504, 1600]
    assert all(Path(row["checkpoint"]).is_file() for row in result["rows"])
    # Pendulum has no D4RL reference: returns, not scores; each the checkpoint's own real episode.
    first = load_sb3_agent(result["rows"][0]["checkpoint"])
    real, _ = evaluate_in_real(first, "Pendulum-v1", 1, 0)
    assert result["rows"][0]["real_return"] == pytest.approx(real) and result["rows"][0]["score"] is None
    # The judge's verdict is the checkpoint's whole episodes in the judge dream, its mean path (temperature 0).
    curve.register_dream(curve.JUDGE_ID, dream)
    assert result["rows"][0]["dream_return"] == pytest.approx(curve.judge_in_dream(first, 2, seed=0, temperature=0.0))
    assert result["judge_knobs"] == {"temperature": 0.0}
    rho, _ = spearman([row["real_return"] for row in result["rows"]], [row["dream_return"] for row in result["rows"]])
    assert result["rank_correlation"] == rho
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    assert "judge dream" in done.stdout


def test_dream_knobs_and_time_limit_reach_the_training_dreams(curve, medium_dream, tmp_path, monkeypatch):
    data, dream = medium_dream
    seen = {}
    train = curve.train_in_dream

    def recording(*args, **kwargs):
        model = train(*args, **kwargs)
        core = model.get_env().unwrapped.core
        seen["kwargs"], seen["limit"], seen["share"] = kwargs, core.max_episode_steps, core.settings.start_share
        return model

    monkeypatch.setattr(curve, "train_in_dream", recording)
    out = tmp_path / "curve.json"
    curve.main([str(dream), "--data", str(data), "--steps", "64", "--every", "32", "--clone-behaviour", "5",
                "--hold-actor", "0", "--max-episode-steps", "7", "--dream-kwarg", "start_share=1.0", "--episodes", "1",
                "--workdir", str(tmp_path / "ck"), "--out", str(out)])
    assert seen["kwargs"]["max_episode_steps"] == 7 and seen["kwargs"]["start_share"] == 1.0
    assert seen["limit"] == 7 and seen["share"] == 1.0
    assert json.loads(out.read_text())["dream_kwargs"] == {"start_share": 1.0, "max_episode_steps": 7}
