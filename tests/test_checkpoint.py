"""The single-file artifact: fit -> save -> load gives the same predictions; bad files say what is wrong."""

from __future__ import annotations

import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch

from learned_envs.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint, write_tensors
from tests.helpers import rewrite_metadata


def test_round_trip_same_predictions(small_checkpoint):
    from learned_envs.data import load
    from learned_envs.fitting import FitConfig, fit_world_model
    from tests.conftest import SMALL_FIT

    ckpt = load_checkpoint(small_checkpoint)
    meta = ckpt.metadata
    # Everything the contract promises is in the metadata.
    for key in ("format_version", "model", "observation_space", "action_space", "source_env_id", "dream", "dataset", "fit",
                "package_version", "created"):
        assert key in meta
    assert len(meta["dataset"]["sha256"]) == 64 and meta["dataset"]["transitions"] == 800
    assert meta["fit"]["history"]["dynamics_holdout"] and meta["model"]["config"]["ensemble_size"] == SMALL_FIT["num_elites"]

    # Refitting with the same seed reproduces the weights, so the saved model equals the fitted one.
    data = load(meta["dataset"]["path"])
    fresh = fit_world_model(data, FitConfig(**SMALL_FIT, seed=0), progress=False).model
    obs = torch.as_tensor(data.observations[:64])
    act = torch.as_tensor(data.actions[:64])
    a = ckpt.model.predict(obs, act, temperature=0.0, members="mean")
    b = fresh.predict(obs, act, temperature=0.0, members="mean")
    for key in ("next_state", "reward", "termination_prob"):
        torch.testing.assert_close(getattr(a, key), getattr(b, key))
    # And the start-state pool is the logged episode starts.
    np.testing.assert_array_equal(ckpt.start_states.numpy(), data.episode_starts())


def test_loading_leaves_the_global_generator_alone(small_checkpoint):
    """Building a dream mid-run (an evaluation env made during training) must not change the
    training's later draws: the model's throwaway initial weights come from a fork of torch's
    global generator."""
    import learned_envs

    learned_envs.register_dream("Test-RngFree-v0", str(small_checkpoint))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_checkpoint(small_checkpoint)
    env = gym.make("Test-RngFree-v0")
    env.reset(seed=1)
    env.step(env.action_space.sample())
    gym.make_vec("Test-RngFree-v0", num_envs=3).reset(seed=2)
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


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


def test_wrong_format_version(small_checkpoint, tmp_path):
    bad = rewrite_metadata(small_checkpoint, tmp_path / "v99.safetensors", lambda m: m.update(format_version=99))
    # The version is checked before the metadata digest: a future format may digest differently.
    with pytest.raises(CheckpointError, match="v99.safetensors: checkpoint format version 99"):
        load_checkpoint(bad)


def test_edited_metadata_is_detected(small_checkpoint, tmp_path):
    """The metadata digest catches an edit the tensor digest cannot see, even a well-formed one."""
    assert read_metadata(small_checkpoint)["metadata_sha256"]
    bad = rewrite_metadata(small_checkpoint, tmp_path / "edited.safetensors", lambda m: m["dream"].update(temperature=0.5))
    with pytest.raises(CheckpointError, match="edited.safetensors: metadata was edited after saving"):
        read_metadata(bad)
    with pytest.raises(CheckpointError, match="metadata was edited"):
        load_checkpoint(bad)
    # A malformed edit names the key first, and still says the metadata was edited.
    shape5 = rewrite_metadata(small_checkpoint, tmp_path / "shape5.safetensors", lambda m: m["observation_space"].update(_box(5)))
    edited = r"shape5.safetensors: .*'observation_space' \(5 values.*'model.config.obs_dim' = 4.*edited after saving"
    with pytest.raises(CheckpointError, match=edited):
        load_checkpoint(shape5)


def test_checkpoint_without_metadata_digest_still_loads(small_checkpoint, tmp_path):
    """Files saved before the metadata digest existed load as before, their tensors still verified."""
    old = rewrite_metadata(small_checkpoint, tmp_path / "old.safetensors", lambda m: None, digest="drop")
    assert "metadata_sha256" not in read_metadata(old)
    assert load_checkpoint(old).model is not None
    raw = bytearray(old.read_bytes())
    raw[-100] ^= 0xFF
    (tmp_path / "old_flipped.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="old_flipped.safetensors: tensor data does not match"):
        load_checkpoint(tmp_path / "old_flipped.safetensors")


def _box(n):
    return {"type": "Box", "shape": [n], "dtype": "float32", "low": ["-inf"] * n, "high": ["inf"] * n}


# (case, edit of the metadata, what the error must say): each names the key that is wrong.
MALFORMED = [
    ("array", lambda m: [1, 2], "a JSON array where a JSON object belongs"),
    ("no_model", lambda m: {k: v for k, v in m.items() if k != "model"}, "metadata key 'model' is missing"),
    ("null_dream", lambda m: m.update(dream=None), "metadata key 'dream' should be a JSON object, not null"),
    ("config_as_list", lambda m: m["model"].update(config=[4, 2]), "metadata key 'model.config' should be a JSON object"),
    ("text_obs_dim", lambda m: m["model"]["config"].update(obs_dim="4"),
      "metadata key 'model.config.obs_dim' should be a JSON whole number"),
    ("extra_config_key", lambda m: m["model"]["config"].update(dropout_layers=2),
      r"metadata key 'model.config': unknown key\(s\) \['dropout_layers'\]"),
    ("fractional_size", lambda m: m["model"]["config"].update(hidden_size=0.5),
      "metadata key 'model.config.hidden_size' should be a positive whole number"),
    ("zero_hidden", lambda m: m["model"]["config"].update(hidden_size=0), "metadata key 'model.config.hidden_size' should be a positive"),
    ("unknown_family", lambda m: m["model"].update(family="transformer"),
      "metadata key 'model.family': unknown model family 'transformer'"),
    ("obs_shape_5", lambda m: m["observation_space"].update(_box(5)),
      r"'observation_space' \(5 values per observation\) does not fit 'model.config.obs_dim' = 4"),
    ("three_actions", lambda m: m["action_space"].update(n=3),
      r"'action_space' \(3 action features\) does not fit 'model.config.action_dim' = 2"),
    ("box_actions", lambda m: m.update(action_space=_box(2)),
      r"'action_space' \(a Box space\) does not fit 'model.config.discrete_actions'"),
    ("space_as_text", lambda m: m.update(observation_space="Box(4)"), "metadata key 'observation_space' should be a JSON object"),
    ("space_no_bounds", lambda m: m.update(observation_space={"type": "Box", "shape": [4]}),
      "metadata key 'observation_space' is not a valid space"),
    ("bad_knob", lambda m: m["dream"].update(temperature="hot"), "metadata key 'dream.temperature' is not a valid setting"),
    ("zero_steps", lambda m: m["dream"].update(max_episode_steps=0),
      "metadata key 'dream.max_episode_steps': max_episode_steps must be >= 1"),
    ("metrics_as_list", lambda m: m["fit"].update(metrics=[]), "metadata key 'fit.metrics' should be a JSON object, not array"),
    ("no_tensor_digest", lambda m: {k: v for k, v in m.items() if k != "tensor_sha256"}, "metadata key 'tensor_sha256' is missing"),
]


@pytest.mark.parametrize("digest", ["drop", "restamp"])
@pytest.mark.parametrize("case, edit, message", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_metadata_names_the_key(small_checkpoint, tmp_path, case, edit, message, digest):
    """Metadata of the wrong shape is a CheckpointError naming the file and the key, never a raw
    KeyError, TypeError or AttributeError; with or without a (matching) metadata digest."""
    bad = rewrite_metadata(small_checkpoint, tmp_path / f"{case}.safetensors", edit, digest=digest)
    with pytest.raises(CheckpointError, match=f"{case}.safetensors: .*{message}"):
        load_checkpoint(bad)


def test_state_tensors_must_fit_obs_dim(small_checkpoint, tmp_path):
    """The start-state pool and the bounds are checked against the model config, digests intact."""
    from safetensors.numpy import load_file

    meta, tensors = read_metadata(small_checkpoint), load_file(str(small_checkpoint))
    narrow = write_tensors(tmp_path / "narrow.safetensors", {**tensors, "obs_low": tensors["obs_low"][:3]}, meta)
    expected = r"narrow.safetensors: tensor 'obs_low' has shape \[3\], but 'model.config.obs_dim' = 4 needs \[4\]"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(narrow)
    empty = write_tensors(tmp_path / "empty.safetensors", {**tensors, "start_states": tensors["start_states"][:0]}, meta)
    with pytest.raises(CheckpointError, match=r"empty.safetensors: tensor 'start_states' has shape \[0, 4\]"):
        load_checkpoint(empty)
    missing = write_tensors(tmp_path / "missing.safetensors", {k: v for k, v in tensors.items() if k != "obs_high"}, meta)
    with pytest.raises(CheckpointError, match="missing.safetensors: no 'obs_high' tensor"):
        load_checkpoint(missing)


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
