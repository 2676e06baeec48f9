"""Gymnasium spaces to and from plain JSON, so data files and checkpoints never pickle a space."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """Describe a ``Box`` or ``Discrete`` space as a JSON-able dict."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": np.dtype(space.dtype).name,
            "low": _finite_list(space.low),
            "high": _finite_list(space.high),
        }
    raise TypeError(f"learned-envs supports Box and Discrete spaces, not {type(space).__name__}")


def space_from_json(spec: Any) -> gym.Space:
    """Inverse of :func:`space_to_json`.

    A description that is not one (not a dict, a missing key, bounds of the wrong size, an
    unknown type) is a ``ValueError`` saying what is wrong, never a bare ``KeyError``: readers
    turn it into a :class:`DataError` naming their file and field.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"a space description is a JSON object with a 'type', not {spec!r}")
    kind = spec.get("type")
    required = {"Discrete": ("n",), "Box": ("shape", "dtype", "low", "high")}.get(kind)
    if required is None:
        raise ValueError(f"unsupported space type {kind!r}: learned-envs supports Box and Discrete")
    missing = [key for key in required if key not in spec]
    if missing:
        raise ValueError(f"a {kind} space description needs {', '.join(required)}; missing {', '.join(missing)}")
    try:
        if kind == "Discrete":
            n, start = spec["n"], spec.get("start", 0)
            for key, value in (("n", n), ("start", start)):  # Infinity or 2.5 would become a wrong space, or an OverflowError
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or abs(int(value)) >= 2**63:
                    raise ValueError(f"'{key}' must be a whole number within int64, not {value!r:.80}")
            return gym.spaces.Discrete(int(n), start=int(start))
        dtype = np.dtype(spec["dtype"])
        low = np.array(spec["low"], dtype=np.float64).reshape(spec["shape"])
        high = np.array(spec["high"], dtype=np.float64).reshape(spec["shape"])
        return gym.spaces.Box(low.astype(dtype), high.astype(dtype), shape=tuple(spec["shape"]), dtype=dtype)
    except (TypeError, ValueError, AssertionError, OverflowError, RecursionError) as exc:  # gymnasium asserts on e.g. Discrete(0)
        raise ValueError(f"unreadable {kind} space description {spec!r} ({type(exc).__name__}: {exc})") from None


def _finite_list(values: np.ndarray) -> list:
    # JSON has no inf; store +-inf as strings that float() reads back.
    return [v if np.isfinite(v) else ("inf" if v > 0 else "-inf") for v in np.asarray(values, np.float64).ravel().tolist()]


def flat_dim(space: gym.Space) -> int:
    """Width of a space once flattened (a Discrete space counts one column: its index)."""
    if isinstance(space, gym.spaces.Discrete):
        return 1
    return int(np.prod(space.shape))


def env_spaces(env_id: str) -> tuple[gym.Space, gym.Space]:
    """The observation and action spaces of the registered Gymnasium env ``env_id``."""
    env = gym.make(env_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
