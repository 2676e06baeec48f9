"""benchmarks/offline_mujoco.py's bookkeeping: a run cut short picks up where it stopped, and only
a learner recorded with the same settings is read back instead of trained again."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from learned_envs import presets
from learned_envs.data import save
from learned_envs.data.collecting import collect
from tests.helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch, tmp_path):
    """The benchmark module with its dataset builder and its learners replaced by stand-ins that
    log each call (the real learners train for an hour; the bookkeeping around them is what is tested)."""
    spec = importlib.util.spec_from_file_location("offline_mujoco", ROOT / "benchmarks" / "offline_mujoco.py")
    module = importlib.util.module_from_spec(spec)
    # The pool's workers find the module's functions by name.
    monkeypatch.setitem(sys.modules, "offline_mujoco", module)
    spec.loader.exec_module(module)
    data = tmp_path / "log.npz"
    save(collect("CartPole-v1", 120, seed=3, progress=False), data)
    monkeypatch.setattr(module, "build_dataset", lambda *args, **kwargs: data)
    calls, failing = tmp_path / "calls.txt", tmp_path / "fail"

    def learner(algo, env_id, kind, path, grad_steps, seed, *rest):
        with open(calls, "a") as log:
            log.write(f"{algo} {seed}\n")
        if failing.exists() and (algo, seed) == ("BC", 1):
            raise RuntimeError("the run was cut short here")
        return {"return": 1000.0 * seed + grad_steps, "seconds": 1.0}

    monkeypatch.setattr(module, "run_learner", learner)

    def run(*args: str) -> list[str]:
        """``main()`` on ``args``; returns the learners it trained (not read back), in no set order."""
        calls.unlink(missing_ok=True)
        monkeypatch.setattr(sys, "argv", ["offline_mujoco.py", "--envs", "HalfCheetah-v5", "--datasets", "random",
                                          "--algos", "IQL", "BC", "--seeds", "0", "1", "--jobs", "2",
                                          "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "table.json"), *args])
        module.main()
        return sorted(calls.read_text().splitlines()) if calls.exists() else []

    run.failing = failing
    run.module = module
    run.table = tmp_path / "table.json"
    run.data = data
    return run


def test_a_run_cut_short_trains_only_what_it_had_not_finished(bench, capsys):
    bench.failing.touch()
    with pytest.raises(RuntimeError, match="cut short"):
        bench("--grad-steps", "50")
    bench.failing.unlink()
    assert bench("--grad-steps", "50") == ["BC 1"]
    printed = capsys.readouterr().out
    assert "random seed 0 IQL: return 50.0" in printed and "recorded earlier" in printed
    rows = json.loads(bench.table.read_text())["rows"]
    assert [row["BC"]["return"] for row in rows] == [50.0, 1050.0]
    assert "recorded" in rows[0]["IQL"] and "recorded" not in rows[1]["BC"]
    # All four recorded: nothing left to train.
    assert bench("--grad-steps", "50") == []


def test_other_settings_train_again(bench):
    assert bench("--grad-steps", "50") == ["BC 0", "BC 1", "IQL 0", "IQL 1"]
    assert bench("--grad-steps", "60") == ["BC 0", "BC 1", "IQL 0", "IQL 1"]
    assert json.loads(bench.table.read_text())["rows"][1]["IQL"]["return"] == 1060.0


def test_the_dreams_arguments_retrain_the_dream_alone(bench):
    algos = ("--algos", "IQL", "dream-SAC")
    assert bench("--grad-steps", "50", *algos) == ["IQL 0", "IQL 1", "dream-SAC 0", "dream-SAC 1"]
    assert bench("--grad-steps", "50", *algos, "--train-args", "--anchor 2") == ["dream-SAC 0", "dream-SAC 1"]
    assert bench("--grad-steps", "50", *algos, "--train-args", "--anchor 2", "--fit-args", "--seed 3") == \
        ["dream-SAC 0", "dream-SAC 1"]
    # The dataset here is random data, whose dream always takes the offline preset.
    assert bench("--grad-steps", "50", *algos, "--train-args", "--anchor 2", "--fit-args", "--seed 3",
                 "--medium-preset", "offline", "--replay-preset", "offline-medium") == []


def test_a_preset_whose_recipe_changed_retrains_the_dream(bench, monkeypatch):
    algos = ("--algos", "IQL", "dream-SAC")
    assert bench("--grad-steps", "50", *algos) == ["IQL 0", "IQL 1", "dream-SAC 0", "dream-SAC 1"]
    offline = presets.PRESETS["offline"]
    changed = dataclasses.replace(offline, training=dataclasses.replace(offline.training, steps=offline.training.steps + 1))
    monkeypatch.setitem(presets.PRESETS, "offline", changed)
    assert bench("--grad-steps", "50", *algos) == ["dream-SAC 0", "dream-SAC 1"]
    # Its description alone is not what it stores.
    monkeypatch.setitem(presets.PRESETS, "offline", dataclasses.replace(changed, description="reworded"))
    assert bench("--grad-steps", "50", *algos) == []


def test_records_kept_where_asked_are_read_back_only_for_the_same_rows(bench, tmp_path):
    records = tmp_path / "kept"
    assert bench("--grad-steps", "50", "--records", str(records)) == ["BC 0", "BC 1", "IQL 0", "IQL 1"]
    assert sorted(path.name for path in records.iterdir()) == [
        f"HalfCheetah-v5-random-{algo}-seed{seed}.json" for algo in ("BC", "IQL") for seed in (0, 1)]
    assert not (tmp_path / "work" / "results").exists() or not any((tmp_path / "work" / "results").iterdir())
    assert bench("--grad-steps", "50", "--records", str(records)) == []
    # The same file name, other rows (a dataset rebuilt elsewhere with other contents): all train again.
    save(collect("CartPole-v1", 120, seed=4, progress=False), bench.data)
    assert bench("--grad-steps", "50", "--records", str(records)) == ["BC 0", "BC 1", "IQL 0", "IQL 1"]


@pytest.mark.parametrize("kind, preset", [("random", "offline"), ("medium", "offline-medium"),
                                          ("medium-replay", "offline-replay"), ("medium-expert", "offline-medium")])
def test_each_kind_of_data_has_its_dreams_preset(bench, kind, preset):
    assert bench.module.dream_preset(kind, "offline-medium", "offline-replay") == preset


def test_the_dreams_learner_runs_the_cli_and_logs_its_progress(tmp_path):
    """The dream learner as the benchmark runs it (``fit`` and ``train`` through the CLI, tiny here),
    its commands' output in the learner's log; a command that fails raises with that log's end."""
    module = load_benchmark("offline_mujoco", "offline_mujoco_real")
    data = save(collect("Pendulum-v1", 400, seed=4, progress=False), tmp_path / "pendulum.npz")
    env = {**module.os.environ, "OMP_NUM_THREADS": "1", "LEARNED_ENVS_HOME": str(tmp_path / "home")}
    tiny = ["--max-updates", "20", "--hidden-size", "16", "--layers", "1", "--ensemble-size", "2", "--elites", "1",
            "--reset-states", "300"]
    result = module.run_learner("dream-SAC", "Pendulum-v1", "random", str(data), 8, 0, 2, str(tmp_path), env, tiny, [],
                                "offline")
    assert result["env_steps"] == 32 and result["preset"] == "offline" and result["return"] < 0  # Pendulum pays costs
    log = module.learner_log(str(tmp_path), "Pendulum-v1", "random", "dream-SAC", 0).read_text()
    assert "$ learned-envs fit" in log and "$ learned-envs train Dream-BenchPendulumRandom-v0" in log
    assert "wrote SAC agent" in log, log[-2000:]
    with pytest.raises(RuntimeError, match=r"(?s)learned-envs fit missing\.npz --id X-v0 failed \(log: .*bad\.log\).*"
                                            r"error: .*missing\.npz"):
        module.cli("fit", "missing.npz", "--id", "X-v0", env=env, log=tmp_path / "bad.log")


def test_the_table_is_drawn_beside_it_or_where_asked(bench, tmp_path, monkeypatch):
    import imageio.v3 as iio

    from learned_envs.evaluation import plots
    from learned_envs.evaluation.scores import normalized_score

    bench("--grad-steps", "50")
    image = iio.imread(bench.table.with_suffix(".png"))
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    # One panel per env and dataset, each learner's scores over the seeds in it.
    bench("--grad-steps", "50", "--datasets", "random", "medium", "--plot", str(tmp_path / "two.png"))
    two = iio.imread(tmp_path / "two.png")
    assert two.shape[0] == image.shape[0] and two.shape[1] > image.shape[1] + 100
    drawn = []
    monkeypatch.setattr(plots, "plot_score_groups", lambda path, groups, title: drawn.append(groups) or path)
    bench("--grad-steps", "50", "--datasets", "random", "medium")
    (groups,) = drawn
    assert [g["label"] for g in groups] == ["HalfCheetah-v5 random, 120 rows, 2 seeds", "HalfCheetah-v5 medium, 120 rows, 2 seeds"]
    normalised = [normalized_score("HalfCheetah-v5", 1000.0 * seed + 50) for seed in (0, 1)]
    assert groups[1]["scores"] == {"IQL": normalised, "BC": normalised}
