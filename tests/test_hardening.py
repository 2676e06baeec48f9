"""Issue 12's cases, each fed as an attacker or a careless user would, each read back as a named
error (items 5-7, about ``fit`` itself, are tested with the fitter).

Crafted checkpoints start from the session's ``small_checkpoint`` and are stamped with fresh
digests, as anyone could: only the checks on content can refuse them.
"""

from __future__ import annotations

import builtins
import json
import pickle
import sys
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from learned_envs.checkpoint import CheckpointError, load_checkpoint, read_metadata
from learned_envs.data import DataError, concatenate, load, save, source_sha256
from learned_envs.dream_settings import DreamSettings
from tests.helpers import good, rewrite_metadata, rewrite_tensors, write_d4rl, write_raw_npz  # noqa: F401  (good is a fixture)

DEEP = "[" * 100_000 + "]" * 100_000  # JSON nested past Python's recursion limit


@pytest.fixture(autouse=True)
def _minari_home(tmp_path, monkeypatch):
    """Minari ids resolve under a fresh folder, never the user's ~/.minari."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari_datasets"))


def crafted(base: Path, folder: Path, name: str, edit) -> Path:
    """The checkpoint ``base`` copied into ``folder`` with its metadata edited by ``edit`` and its digests restamped."""
    return rewrite_metadata(base, folder / f"{name}.safetensors", edit, digest="restamp")


def marker_module(tmp_path: Path, monkeypatch, name: str) -> Path:
    """A module ``name`` on ``sys.path`` that, if ever imported, leaves a file behind: the marker's path."""
    marker = tmp_path / f"{name}.imported"
    (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


class _Planted:
    """Unpickling this leaves a file behind: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# -- 1. a crafted checkpoint never makes evaluate unpickle ----------------------------------------
def _with_dataset(path: Path, digest: str | None):
    return lambda m: m["dataset"].update(path=str(path), sha256=digest) or m["fit"].update(holdout_episodes=[0, 1])


def test_evaluate_without_data_never_unpickles_a_recorded_dataset(small_checkpoint, tmp_path):
    from learned_envs.evaluation.sources import RecordedDataUnavailable, load_eval_data, resolve

    marker = tmp_path / "unpickled"
    bait = tmp_path / "buffer.pkl"
    bait.write_bytes(pickle.dumps(_Planted(marker)))
    # The digest matches: digests detect corruption, and an attacker recomputes them.
    ckpt = crafted(small_checkpoint, tmp_path, "pickle_path", _with_dataset(bait, source_sha256(bait)))
    with pytest.raises(RecordedDataUnavailable, match=r"pickle_path.safetensors: .*buffer.pkl.* is a pickle .*pass --data"):
        load_eval_data(resolve(ckpt), None)
    assert not marker.exists()


@pytest.mark.parametrize("digest, pattern", [(None, "has no recorded sha256"), ("0" * 64, "sha256 mismatch")])
def test_evaluate_without_data_needs_a_matching_digest(small_checkpoint, good, tmp_path, digest, pattern):
    from learned_envs.evaluation.sources import RecordedDataUnavailable, load_eval_data, resolve

    data = save(good, tmp_path / "train.npz")
    with pytest.raises(RecordedDataUnavailable, match=f"{pattern}.*pass --data"):
        load_eval_data(resolve(crafted(small_checkpoint, tmp_path, "digest", _with_dataset(data, digest))), None)


# -- 2. a source env id never imports a module; folder ids are checked -----------------------------
def test_render_never_imports_the_module_of_a_source_env_id(small_checkpoint, tmp_path, monkeypatch):
    from learned_envs.dreams.env import DreamEnv

    marker = marker_module(tmp_path, monkeypatch, "planted_render_mod")
    ckpt = crafted(small_checkpoint, tmp_path, "colon", lambda m: m.update(source_env_id="planted_render_mod:Evil-v0"))
    env = DreamEnv(str(ckpt), render_mode="rgb_array")
    env.reset(seed=0)
    with pytest.raises(NotImplementedError, match="'planted_render_mod:Evil-v0' is not an environment registered"):
        env.render()
    assert not marker.exists() and "planted_render_mod" not in sys.modules


@pytest.mark.parametrize("dream_id", ["planted_scan_mod:Dream-v0", "Dream/../Evil-v0", "NoVersion"])
def test_folder_scan_refuses_ids_that_are_not_plain_dream_ids(small_checkpoint, tmp_path, monkeypatch, dream_id):
    from learned_envs.registry import _register_folder

    marker = marker_module(tmp_path, monkeypatch, "planted_scan_mod")
    folder = tmp_path / "dreams"
    folder.mkdir()
    crafted(small_checkpoint, folder, "bad_id", lambda m: m["dream"].update(id=dream_id))
    with pytest.warns(UserWarning, match=r"skipping dream .*bad_id.safetensors: metadata key 'dream.id': .*must look like 'Name-v0'"):
        _register_folder(folder, "user")
    assert dream_id not in gym.registry
    with pytest.raises(gym.error.Error):  # the id was never registered: nothing to make, nothing imported
        gym.make("Dream/../Evil-v0" if dream_id != "NoVersion" else "NoVersion")
    assert not marker.exists()


# -- 3. sizes are checked against the tensors before anything is allocated -----------------------
@pytest.mark.parametrize("key, value, pattern", [
    ("num_layers", 200_000, r"'model.config': .*num_layers"),
    ("hidden_size", 30_000, r"'model.config': .*hidden_size"),
    ("num_layers", 5, r"no 'model.hidden.\d.(weight|bias)' tensor"),  # plausible, but not what the file holds
    ("ensemble_size", 6, r"tensor 'model\.[\w.]+' has shape \[\d, .*\], but the model config in its metadata needs \[6, .*\]"),
])
def test_crafted_model_sizes_are_refused_before_allocation(small_checkpoint, tmp_path, key, value, pattern):
    ckpt = crafted(small_checkpoint, tmp_path, "sizes", lambda m: m["model"]["config"].update({key: value}))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=f"sizes.safetensors: .*{pattern}"):
        load_checkpoint(ckpt)
    assert time.perf_counter() - start < 2.0


def test_unknown_model_family_is_refused_by_name(small_checkpoint, tmp_path):
    ckpt = crafted(small_checkpoint, tmp_path, "family", lambda m: m["model"].update(family="os.system"))
    with pytest.raises(CheckpointError, match=r"family.safetensors: metadata key 'model.family': unknown model family 'os.system'"):
        load_checkpoint(ckpt)


# -- 4. every tensor value is checked on load -----------------------------------------------------
def _set(name: str, index, value):
    def edit(tensors):
        tensors[name][index] = value
    return edit


@pytest.mark.parametrize("edit, pattern", [
    (_set("start_states", (0, 1), np.nan), r"tensor 'start_states' holds NaN or infinite values"),
    (_set("start_states", (2, 0), 100.0), r"tensor 'start_states', row 2: .* is outside the observation space"),
    (_set("obs_low", 0, np.nan), r"tensor 'obs_low' holds NaN"),
    (_set("obs_low", 3, 99.0), r"tensors 'obs_low'/'obs_high' disagree: at feature 3, low 99.0"),
    (_set("model.hidden.0.weight", (0, 0, 0), np.inf), r"tensor 'model.hidden.0.weight' holds NaN or infinite values"),
    (_set("model.input_norm.std", 2, 0.0), r"tensor 'model.input_norm.std' \(a normaliser's std\) holds 0.0"),
    (_set("model.target_norm.std", 0, -1.0), r"tensor 'model.target_norm.std' .* holds -1.0"),
], ids=["nan-start", "start-outside-space", "nan-bound", "low-above-high", "inf-weight", "zero-std", "negative-std"])
def test_bad_tensor_values_are_refused(small_checkpoint, tmp_path, edit, pattern):
    ckpt = rewrite_tensors(small_checkpoint, tmp_path / "values.safetensors", edit)
    with pytest.raises(CheckpointError, match=f"values.safetensors: {pattern}"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("value", [float("nan"), -1.0, "big"])
def test_max_train_disagreement_must_be_a_finite_non_negative_number(small_checkpoint, tmp_path, value):
    metrics = lambda m: m["fit"].setdefault("metrics", {}).update(max_train_disagreement=value)  # noqa: E731
    ckpt = crafted(small_checkpoint, tmp_path, "disagreement", metrics)
    with pytest.raises(CheckpointError, match="'fit.metrics.max_train_disagreement' should be a finite number >= 0"):
        read_metadata(ckpt)


@pytest.mark.parametrize("value, pattern", [
    ([0.5, 1.0], "should be a JSON object of 1 to 64 quantiles"),
    ({}, "should be a JSON object of 1 to 64 quantiles"),
    ({"1.5": 0.3}, "has key '1.5', which is not a quantile between 0 and 1"),
    ({"half": 0.3}, "has key 'half', which is not a quantile"),
    ({"0.5": float("nan")}, r"'fit.metrics.train_disagreement_quantiles.0.5' should be a finite number >= 0"),
    ({"0.5": 0.4, "0.9": 0.2}, r"the 0.9 quantile \(0.2\) is below the 0.5 quantile \(0.4\)"),
])
def test_recorded_disagreement_quantiles_are_checked(small_checkpoint, tmp_path, value, pattern):
    metrics = lambda m: m["fit"].setdefault("metrics", {}).update(train_disagreement_quantiles=value)  # noqa: E731
    ckpt = crafted(small_checkpoint, tmp_path, "quantiles", metrics)
    with pytest.raises(CheckpointError, match=pattern):
        read_metadata(ckpt)
    # support_halt="auto" reads its own record, checked the same way.
    metrics = lambda m: m["fit"].setdefault("metrics", {}).update(support_distance_quantiles=value)  # noqa: E731
    ckpt = crafted(small_checkpoint, tmp_path, "support", metrics)
    with pytest.raises(CheckpointError, match=pattern.replace("train_disagreement", "support_distance")):
        read_metadata(ckpt)


def test_a_quantile_halt_needs_the_recorded_quantiles(small_checkpoint, tmp_path):
    from learned_envs.dreams.core import DreamCore

    metrics = lambda m: m["fit"].setdefault("metrics", {}).update(train_disagreement_quantiles={"0.9": 0.2, "1.0": 0.5})  # noqa: E731
    partial = load_checkpoint(crafted(small_checkpoint, tmp_path, "partial", metrics))
    with pytest.raises(ValueError, match=r"halt_quantile=0.5 is outside the quantiles the fit recorded \(0.9 to 1.0\)"):
        DreamCore(partial, halt_threshold="auto", halt_quantile=0.5)
    assert DreamCore(partial, halt_threshold="auto", halt_quantile=0.95).halt_threshold == pytest.approx(0.35)
    old = load_checkpoint(crafted(small_checkpoint, tmp_path, "old", lambda m: m["fit"]["metrics"].clear()))
    with pytest.raises(ValueError, match="needs the fit's record of train_disagreement_quantiles"):
        DreamCore(old, halt_threshold="auto", halt_quantile=0.99)
    with pytest.raises(ValueError, match=r"penalty_threshold='auto' at penalty_quantile=0.99 needs the fit's record"):
        DreamCore(old, uncertainty_penalty=1.0, penalty_of="disagreement", penalty_threshold="auto")


# -- 5 and 6, their data half: what cannot make a sound dream is refused at the door ---------------
@pytest.mark.parametrize("field, value, pattern", [
    ("observations", 1e39, r"field 'observations', row 5: is beyond float32's range"),
    ("rewards", 1e30, r"field 'rewards', row 5: value 1e\+30 is beyond \+-1e\+15"),
    ("next_observations", -1e20, r"field 'next_observations', row 5: value 1e\+20 is beyond"),
])
def test_values_a_float32_fit_cannot_hold_are_refused(good, tmp_path, field, value, pattern):
    array = getattr(good, field).astype(np.float64)
    array[5] = value
    with pytest.raises(DataError, match=f"big.npz: {pattern}"):
        load(write_raw_npz(tmp_path / "big.npz", good, **{field: array}))


@pytest.mark.parametrize("env_id", [7, ["CartPole-v1"], {"id": "CartPole-v1"}])
def test_source_env_id_must_be_a_string(good, tmp_path, env_id):
    path = write_raw_npz(tmp_path / "env.npz", good, metadata=np.array(json.dumps({"source_env_id": env_id})))
    with pytest.raises(DataError, match="env.npz: field 'metadata source_env_id': must be a string"):
        load(path)


# -- 8. knobs that would overflow float32 or int64 ------------------------------------------------
@pytest.mark.parametrize("knob, value", [("halt_reward", 1e300), ("temperature", 1e39), ("uncertainty_penalty", 1e300),
                                         ("bounds_margin", 10**400), ("halt_threshold", 1e20)])
def test_knobs_beyond_float32_are_refused_by_name(knob, value):
    with pytest.raises(ValueError, match=f"^{knob} .*(beyond|finite)"):
        DreamSettings.resolve({}, {knob: value})


def test_max_episode_steps_beyond_int64_is_refused_by_name(small_checkpoint, tmp_path):
    from learned_envs import register_dream
    from learned_envs.dreams.vector import DreamVectorEnv

    with pytest.raises(ValueError, match="max_episode_steps must be between 1 and 2\\*\\*62"):
        DreamVectorEnv(str(small_checkpoint), num_envs=2, max_episode_steps=10**30)
    with pytest.raises(ValueError, match="max_episode_steps must be between 1"):
        register_dream("Test-HugeLimit-v0", small_checkpoint, max_episode_steps=10**30)
    ckpt = crafted(small_checkpoint, tmp_path, "limit", lambda m: m["dream"].update(max_episode_steps=10**30))
    with pytest.raises(CheckpointError, match="limit.safetensors: metadata key 'dream.max_episode_steps': max_episode_steps must be betw"):
        read_metadata(ckpt)


# -- 9. no step before reset -----------------------------------------------------------------------
def test_vector_faces_refuse_to_step_before_reset(small_checkpoint):
    from learned_envs.dreams.sb3 import DreamSB3VecEnv
    from learned_envs.dreams.vector import DreamVectorEnv

    venv = DreamVectorEnv(str(small_checkpoint), num_envs=3)
    with pytest.raises(gym.error.ResetNeeded, match="before reset"):
        venv.step(np.zeros(3, dtype=np.int64))
    venv.reset(seed=0, options={"reset_mask": np.array([True, False, True])})
    with pytest.raises(gym.error.ResetNeeded, match=r"dreams \[1\]"):
        venv.step(np.zeros(3, dtype=np.int64))
    venv.reset(seed=0)
    assert venv.step(np.zeros(3, dtype=np.int64))[0].shape == (3, 4)

    sb3 = DreamSB3VecEnv(str(small_checkpoint), num_envs=2)
    with pytest.raises(gym.error.ResetNeeded, match="before reset"):
        sb3.step(np.zeros(2, dtype=np.int64))
    sb3.reset()
    assert sb3.step(np.zeros(2, dtype=np.int64))[0].shape == (2, 4)


# -- 10. raw exceptions become DataError / CheckpointError ------------------------------------------
def test_nested_json_in_checkpoint_metadata(small_checkpoint, tmp_path):
    ckpt = rewrite_metadata(small_checkpoint, tmp_path / "deep.safetensors", lambda m: DEEP)
    with pytest.raises(CheckpointError, match="deep.safetensors: corrupted metadata, JSON nested too deeply"):
        read_metadata(ckpt)


def test_nested_json_in_npz_and_hdf5_metadata(good, tmp_path):
    with pytest.raises(DataError, match="deep.npz: field 'metadata': is JSON nested too deeply"):
        load(write_raw_npz(tmp_path / "deep.npz", good, metadata=np.array(DEEP)))
    h5py = pytest.importorskip("h5py")
    path = write_d4rl(tmp_path / "deep.hdf5", good)
    with h5py.File(path, "a") as fh:
        fh.attrs["metadata"] = DEEP
    with pytest.raises(DataError, match="deep.hdf5: field 'attribute metadata': is JSON nested too deeply"):
        load(path)


def _minari_copy(good, tmp_path: Path) -> Path:
    pytest.importorskip("h5py")
    return save(good, tmp_path / "cartpole_dataset")


def _edit_minari_metadata(folder: Path, **changes) -> None:
    meta_path = folder / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))


def test_minari_metadata_faults_are_named(good, tmp_path):
    folder = _minari_copy(good, tmp_path)
    _edit_minari_metadata(folder, env_spec={"id": "CartPole-v1"})  # an object, not minari's JSON text: read as one
    assert load(folder).metadata["source_env_id"] == "CartPole-v1"
    _edit_minari_metadata(folder, env_spec=[1, 2])
    with pytest.raises(DataError, match="metadata.json: field 'env_spec': must be a JSON object or its JSON text"):
        load(folder)
    (folder / "data" / "metadata.json").write_text(DEEP)
    with pytest.raises(DataError, match="metadata.json: JSON nested too deeply"):
        load(folder)


def test_minari_episode_number_beyond_int64(good, tmp_path):
    import h5py

    folder = _minari_copy(good, tmp_path)
    _edit_minari_metadata(folder, total_episodes=None)
    with h5py.File(folder / "data" / "main_data.hdf5", "a") as fh:
        fh.move("episode_0", f"episode_{2**70}")
    with pytest.raises(DataError, match=f"main_data.hdf5: field 'episode_{2**70}': episode number beyond int64"):
        load(folder)


def test_npy_file_named_npz(tmp_path):
    path = tmp_path / "array.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros(3))
    with pytest.raises(DataError, match=r"array.npz: holds a single ndarray \(a .npy file\?\)"):
        load(path)


def test_corrupted_compressed_npz(good, tmp_path):
    import struct

    raw = bytearray(save(good, tmp_path / "good.npz").read_bytes())
    name = raw.index(b"observations.npy")  # in the member's local header, which starts 30 bytes before it
    extra = struct.unpack("<H", raw[name - 2 : name])[0]
    raw[name + len(b"observations.npy") + extra] |= 0b110  # deflate block type 3, which does not exist: a zlib.error, not a CRC error
    (tmp_path / "flipped.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="flipped.npz: not a readable .npz file"):
        load(tmp_path / "flipped.npz")


def test_sb3_position_outside_the_buffer(good, tmp_path):
    path = save(good, tmp_path / "buffer.pkl")
    buffer = pickle.loads(path.read_bytes())
    buffer.pos = buffer.buffer_size + 5
    path.write_bytes(pickle.dumps(buffer))
    with pytest.raises(DataError, match=r"buffer.pkl: field 'pos': is \d+, outside the buffer's \d+ rows"):
        load(path)


def test_merge_with_a_behaviour_policy_that_is_not_an_object(good):
    odd = good.select(np.arange(len(good)))
    odd.metadata["behaviour_policy"] = "random"
    with pytest.raises(DataError, match=r"merged \(part 1\): field 'metadata behaviour_policy': must be a JSON object"):
        concatenate([good, odd], source="merged")


def test_permission_denied_is_not_reported_as_missing(small_checkpoint, tmp_path, monkeypatch):
    locked = tmp_path / "locked.safetensors"
    locked.write_bytes(small_checkpoint.read_bytes())
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):  # root reads any file, so the refusal is simulated
        if Path(str(file)) == locked:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(CheckpointError, match="locked.safetensors: permission denied"):
        read_metadata(locked)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_metadata(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("n", [float("inf"), 2.5, 10**30])
def test_discrete_space_with_a_non_integer_size(small_checkpoint, good, tmp_path, n):
    space = json.dumps({"type": "Discrete", "n": n})
    with pytest.raises(DataError, match="n.npz: field 'action_space': .*'n' must be a whole number"):
        load(write_raw_npz(tmp_path / "n.npz", good, action_space=np.array(space)))
    ckpt = crafted(small_checkpoint, tmp_path, "n", lambda m: m["action_space"].update(n=n))
    with pytest.raises(CheckpointError, match="n.safetensors: metadata key 'action_space' is not a valid space"):
        read_metadata(ckpt)


# -- 11. evaluate finds a Minari dataset folder through learned_envs.data ------------------------
def test_evaluate_without_data_reads_a_recorded_minari_folder(small_checkpoint, good, tmp_path):
    from learned_envs.evaluation.sources import load_eval_data, resolve

    folder = _minari_copy(good, tmp_path)
    ckpt = crafted(small_checkpoint, tmp_path, "minari", _with_dataset(folder.resolve(), source_sha256(folder)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        held_out, where = load_eval_data(resolve(ckpt), None)
    assert where.startswith(str(folder.resolve())) and "2 holdout episodes" in where
    first_two = good.episode_index() <= 1
    np.testing.assert_array_equal(held_out.observations, good.observations[first_two])
