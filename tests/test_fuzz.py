"""Property: whatever bytes and metadata come in, the data door and the checkpoint loader answer
with a valid result or their own error (DataError / CheckpointError), never anything else."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from learned_envs.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from learned_envs.data import DataError, Transitions, load  # noqa: E402
from learned_envs.data.transitions import FIELDS  # noqa: E402
from tests.helpers import rewrite_metadata, rewrite_tensors  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
special = st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e30, -1e39, 3e38, float("nan"), float("inf"), 2.0**63, -(2.0**64)])
spaces = st.sampled_from([
    {"type": "Box", "shape": [4], "dtype": "float32", "low": ["-inf"] * 4, "high": ["inf"] * 4},
    {"type": "Box", "shape": [1], "dtype": "float32", "low": [-1.0], "high": [1.0]},
    {"type": "Discrete", "n": 2},
]) | json_values


@st.composite
def raw_arrays(draw) -> dict[str, np.ndarray]:
    """Field arrays of random length, dtype and values (mostly plausible, sometimes not)."""
    n = draw(st.integers(0, 5))
    arrays = {}
    for name in FIELDS:
        if draw(st.integers(0, 9)) == 0:
            continue  # a missing field
        width = {"observations": 4, "next_observations": 4}.get(name)
        shape = (n,) if width is None else (n, draw(st.sampled_from([width, width, 1])))
        dtype = draw(st.sampled_from(["float64", "float32", "int64", "bool"]))
        values = draw(st.lists(special, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        with np.errstate(invalid="ignore", over="ignore"):
            arrays[name] = np.array(values, dtype=np.float64).reshape(shape).astype(dtype)
    return arrays


VALID_ROW = {"observations": np.zeros((1, 4)), "actions": np.zeros(1, np.int64), "rewards": np.ones(1),
             "next_observations": np.full((1, 4), 0.1), "terminations": np.ones(1, bool), "truncations": np.zeros(1, bool)}
BOX4 = {"type": "Box", "shape": [4], "dtype": "float32", "low": ["-inf"] * 4, "high": ["inf"] * 4}


@FUZZ
@given(arrays=raw_arrays(), metadata=json_values, observation_space=spaces, action_space=spaces)
@example(arrays=VALID_ROW, metadata={"source_env_id": "CartPole-v1"}, observation_space=BOX4, action_space={"type": "Discrete", "n": 2})
def test_the_data_door_answers_with_transitions_or_a_data_error(arrays, metadata, observation_space, action_space):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.npz"
        extra = {"metadata": json.dumps(metadata), "observation_space": json.dumps(observation_space),
                 "action_space": json.dumps(action_space)}
        np.savez(path, **arrays, **{k: np.array(v) for k, v in extra.items()})
        try:
            data = load(path)
        except DataError as exc:
            assert str(exc).startswith(str(path)), exc
            return
    assert isinstance(data, Transitions) and len(data) > 0
    for name in ("observations", "next_observations", "rewards"):
        values = getattr(data, name)
        assert values.dtype == np.float32 and np.isfinite(values).all(), name
    assert data.observations[0] in data.observation_space or not np.isfinite(data.observation_space.low).all()


METADATA_KEYS = ["model.family", "model.config.num_layers", "model.config.hidden_size", "model.config.obs_dim",
                 "model.config", "observation_space", "action_space", "observation_space.n", "source_env_id",
                 "dream", "dream.temperature", "dream.max_episode_steps", "fit", "fit.metrics.max_train_disagreement",
                 "fit.metrics.train_disagreement_quantiles",
                 "dataset", "format_version"]
TENSORS = ["start_states", "obs_low", "obs_high", "model.input_norm.std", "model.head.weight", "model.max_logvar"]


def _set_key(meta: dict, dotted: str, value) -> None:
    *parents, name = dotted.split(".")
    for parent in parents:
        meta = meta.setdefault(parent, {}) if isinstance(meta.get(parent, {}), dict) else {}
    meta[name] = value


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(METADATA_KEYS), json_values), max_size=2),
       tensor_edits=st.lists(st.tuples(st.sampled_from(TENSORS), st.integers(0, 10_000), special), max_size=2),
       digest=st.sampled_from(["restamp", "keep"]))
def test_the_checkpoint_loader_answers_with_a_dream_or_a_checkpoint_error(small_checkpoint, edits, tensor_edits, digest):
    def edit_tensors(tensors):
        for name, index, value in tensor_edits:
            flat = tensors[name].reshape(-1)
            with np.errstate(over="ignore"):  # a float64 value past float32's range becomes inf: a case to refuse
                flat[index % flat.size] = value

    def edit_metadata(meta):
        for key, value in edits:
            _set_key(meta, key, value)

    with tempfile.TemporaryDirectory() as folder:
        stage = rewrite_tensors(small_checkpoint, Path(folder) / "stage.safetensors", edit_tensors)
        path = rewrite_metadata(stage, Path(folder) / "fuzz.safetensors", edit_metadata, digest=digest)
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as exc:
            assert str(exc).startswith(str(path)), exc
            assert edits or tensor_edits, f"an untouched copy was refused: {exc}"
            return
    for tensor in (checkpoint.start_states, checkpoint.obs_low, checkpoint.obs_high, *checkpoint.model.state_dict().values()):
        assert tensor.isfinite().all()
    low = checkpoint.observation_space.low
    assert (checkpoint.start_states.numpy() >= low).all()
