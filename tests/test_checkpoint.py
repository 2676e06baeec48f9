"""The single-file artifact: fit -> save -> load gives the same predictions; bad files say what is wrong."""

from __future__ import annotations

import json
import shutil
import struct

import gymnasium as gym
import numpy as np
import pytest
import torch

from learned_envs.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint


def test_round_trip_same_predictions(small_checkpoint):
    from learned_envs.data import load
    from learned_envs.fitting import FitConfig, fit_world_model
    from tests.conftest import SMALL_FIT

    ckpt = load_checkpoint(small_checkpoint)
    meta = ckpt.metadata
    # Everything the contract promises is in the metadata.
    for key in ("format_version", "model", "observation_space", "action_space", "source_env_id", "dream", "dataset", "fit", "package_version", "created"):
        assert key in meta
    assert len(meta["dataset"]["sha256"]) == 64 and meta["dataset"]["transitions"] == 800
    assert meta["fit"]["history"]["holdout_mse"] and meta["model"]["config"]["ensemble_size"] == SMALL_FIT["num_elites"]

    # Refitting with the same seed reproduces the weights, so the saved model equals the fitted one.
    data = load(meta["dataset"]["path"])
    fresh = fit_world_model(data, FitConfig(**SMALL_FIT, seed=0), progress=False).model
    obs = torch.as_tensor(data.observations[:64])
    act = torch.as_tensor(data.actions[:64])
    a = ckpt.model.predict(obs, act, temperature=0.0, members="mean")
    b = fresh.predict(obs, act, temperature=0.0, members="mean")
    for key in ("next_state", "reward", "termination_prob", "disagreement"):
        torch.testing.assert_close(a[key], b[key])
    # And the start-state pool is the logged episode starts.
    np.testing.assert_array_equal(ckpt.start_states.numpy(), data.episode_starts())


def test_truncated_file(small_checkpoint, tmp_path):
    bad = tmp_path / "truncated.safetensors"
    raw = small_checkpoint.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated.safetensors: truncated"):
        load_checkpoint(bad)


def test_corrupted_tensor_bytes(small_checkpoint, tmp_path):
    bad = tmp_path / "flipped.safetensors"
    raw = bytearray(small_checkpoint.read_bytes())
    raw[-100] ^= 0xFF  # inside the tensor data, header intact
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="flipped.safetensors: tensor data does not match the checksum"):
        load_checkpoint(bad)


def _rewrite_metadata(src, dst, edit):
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["learned_envs"])
    edit(meta)
    header["__metadata__"]["learned_envs"] = json.dumps(meta)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    dst.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])
    return dst


def test_wrong_format_version(small_checkpoint, tmp_path):
    bad = _rewrite_metadata(small_checkpoint, tmp_path / "v99.safetensors", lambda m: m.update(format_version=99))
    with pytest.raises(CheckpointError, match="v99.safetensors: checkpoint format version 99"):
        load_checkpoint(bad)


def test_wrong_kind(tmp_path):
    from safetensors.numpy import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(other))
    with pytest.raises(CheckpointError, match="other.safetensors: a safetensors file, but not a learned-envs checkpoint"):
        read_metadata(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 5)
    with pytest.raises(CheckpointError, match="junk.safetensors: truncated or not a safetensors file"):
        load_checkpoint(junk)


def test_wrong_spaces(small_checkpoint):
    with pytest.raises(CheckpointError, match="is for observation space"):
        load_checkpoint(small_checkpoint, observation_space=gym.spaces.Box(-1, 1, (3,)))
    with pytest.raises(CheckpointError, match="is for action space"):
        load_checkpoint(small_checkpoint, action_space=gym.spaces.Discrete(3))
    load_checkpoint(small_checkpoint, observation_space=gym.make("CartPole-v1").observation_space)


def test_write_is_atomic(small_checkpoint, tmp_path, monkeypatch):
    """A crash mid-write leaves the previous file intact and no partial file behind."""
    import safetensors.numpy

    ckpt = load_checkpoint(small_checkpoint)
    target = tmp_path / "dream.safetensors"
    shutil.copy(small_checkpoint, target)
    before = target.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(target, ckpt.model, ckpt.start_states.numpy(), ckpt.obs_low.numpy(), ckpt.obs_high.numpy(), ckpt.metadata)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["dream.safetensors"]


def test_loading_never_unpickles(small_checkpoint, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load used pickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert load_checkpoint(small_checkpoint).model is not None
