"""Independent runs (one agent trained per setting and seed) in this process, in a local process
pool, or as Ray tasks on a cluster: one function, so sweeps and benchmarks share it.

    run_independent(train_and_score, calls, jobs=2)              # two local processes
    run_independent(train_and_score, calls, ray_address="local") # Ray tasks on a local instance
    run_independent(train_and_score, calls, ray_address="auto")  # or "ray://head:10001": a cluster

Results come back in the order of ``calls`` whichever way they ran, so a table built from them is
the same, and each as soon as it and those before it are done, so a caller can print as they come.
Ray is imported only when asked for: the local paths need no Ray.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")

__all__ = ["run_independent"]


def run_independent(
    fn: Callable[..., T],
    calls: Sequence[tuple[Any, ...]],
    jobs: int = 1,
    ray_address: str | None = None,
) -> Iterator[T]:
    """``fn(*args)`` for each of ``calls``, independent of one another, yielded in the order of ``calls``.

    ``ray_address``: ``"local"`` starts a Ray instance on this machine (``jobs`` CPUs if
    ``jobs > 1``, else all of them), any other value is passed to ``ray.init(address=...)``
    (``"auto"``, ``"ray://head:10001"``); each call becomes a Ray task holding one CPU. Without
    it, ``jobs > 1`` runs that many calls at once in local processes, and ``jobs == 1`` runs them
    one after the other here. ``fn`` must be importable by its module path (or picklable) and
    should pin its own torch threads: a worker starts with torch's default.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    # Checked here, not on the first result: a bad call fails before any run starts.
    if ray_address is not None:
        return _run_on_ray(_import_ray(), fn, calls, ray_address, jobs)
    if jobs == 1 or len(calls) <= 1:
        return (fn(*args) for args in calls)
    return _run_in_pool(fn, calls, jobs)


def _run_in_pool(fn: Callable[..., T], calls: Sequence[tuple[Any, ...]], jobs: int) -> Iterator[T]:
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(calls))) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        yield from (future.result() for future in futures)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError('running on Ray needs Ray: pip install "learned-envs[ray]"') from exc
    return ray


def _run_on_ray(ray: Any, fn: Callable[..., T], calls: Sequence[tuple[Any, ...]], address: str, jobs: int) -> Iterator[T]:
    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            # A local instance's workers inherit this environment (PYTHONPATH included), so they
            # import the same learned_envs; on a cluster it must be installed on every node.
            ray.init(num_cpus=jobs if jobs > 1 else None, include_dashboard=False, log_to_driver=True)
        else:
            ray.init(address=address, log_to_driver=True)
    # One CPU per task: Ray then runs as many at once as the cluster has CPUs, and sets
    # OMP_NUM_THREADS=1 in each worker, as the local pool's one torch thread per run.
    remote_fn = ray.remote(num_cpus=1)(fn)
    try:
        refs = [remote_fn.remote(*args) for args in calls]
        yield from (ray.get(ref) for ref in refs)
    finally:
        if started_here:
            ray.shutdown()

