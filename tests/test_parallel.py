"""Independent runs of a sweep: here, in a local process pool, or as Ray tasks, with one table."""

from __future__ import annotations

import sys

import pytest

from learned_envs.evaluation import transfer
from learned_envs.parallel import run_independent

SWEEP = {"temperature": [0.0, 1.0]}


def _scores(result: dict) -> list[tuple]:
    """What the table is made of: per setting and seed, the dream and the real return (not the seconds)."""
    return [(row["label"], s["seed"], s["dream"], s["real"]) for row in result["rows"] for s in row["per_seed"]]


def test_run_independent_keeps_the_order_of_the_calls():
    calls = [(17, 5), (9, 4), (100, 7), (3, 3)]
    expected = [divmod(*args) for args in calls]
    assert list(run_independent(divmod, calls)) == expected
    assert list(run_independent(divmod, calls, jobs=3)) == expected
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        run_independent(divmod, calls, jobs=0)


def test_ray_is_asked_for_only_when_wanted(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: importing it fails
    assert list(run_independent(divmod, [(7, 2), (9, 2)], jobs=2)) == [(3, 1), (4, 1)]
    with pytest.raises(ImportError, match=r"learned-envs\[ray\]"):
        run_independent(divmod, [(7, 2)], ray_address="local")


def test_a_sweep_in_a_process_pool_gives_the_table_it_gives_in_process(small_checkpoint):
    # Workers resolve the bare checkpoint path themselves, as a fresh process on another node would.
    kwargs = dict(algo="PPO", steps=1_024, sweep=SWEEP, seeds=1, episodes=3, progress=False, verbose=False)
    here = transfer(small_checkpoint, jobs=1, **kwargs)
    pooled = transfer(small_checkpoint, jobs=2, **kwargs)
    assert [row["label"] for row in pooled["rows"]] == ["temperature=0", "temperature=1"]
    assert _scores(pooled) == _scores(here)


def test_cli_rejects_a_jobs_count_below_one(small_checkpoint, capsys):
    from learned_envs.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", str(small_checkpoint), "--transfer", "PPO", "--jobs", "0"])
    assert "--jobs" in capsys.readouterr().err


@pytest.mark.slow
def test_a_sweep_as_ray_tasks_gives_the_table_of_the_local_pool(small_checkpoint):
    pytest.importorskip("ray")
    kwargs = dict(algo="PPO", steps=1_024, sweep=SWEEP, seeds=1, episodes=3, progress=False, verbose=False)
    pooled = transfer(small_checkpoint, jobs=2, **kwargs)
    on_ray = transfer(small_checkpoint, jobs=2, ray="local", **kwargs)
    assert _scores(on_ray) == _scores(pooled)
    # Ray was started for the sweep and shut down after it: the caller's process is left as it was.
    import ray

    assert not ray.is_initialized()
