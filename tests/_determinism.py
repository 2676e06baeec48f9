"""Deterministic dreams, so that two faces of one dream can be compared value for value.

With ``propagation="mean"`` and ``temperature=0`` a step is a function of state and action; with
the start pool cut to one state, every reset (autoresets included) starts from the same place.
The only randomness left is which start is drawn, and there is only one.
"""

from __future__ import annotations

from typing import Any

DETERMINISTIC: dict[str, Any] = {"temperature": 0.0, "propagation": "mean"}


def pin_start_states(core: Any) -> None:
    """Cut ``core``'s logged start pool (``[S, D]``) to its first state (``[1, D]``)."""
    core.start_states = core.start_states[:1]
