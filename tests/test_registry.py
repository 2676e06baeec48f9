"""Registration as a user meets it: bad files in the dream folder cost only themselves, and a
dream never silently takes over a real environment's id."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings

import gymnasium as gym
import pytest

import learned_envs
from learned_envs.registry import _DREAMS, ENTRY_POINT
from tests.helpers import rewrite_metadata

REAL_CARTPOLE = "gymnasium.envs.classic_control.cartpole:CartPoleEnv"


def test_bad_user_checkpoints_do_not_break_the_import(small_checkpoint, tmp_path):
    """Each bad file is warned about by name and skipped; the rest of the folder, the shipped
    dreams, the real envs and the CLI all still work."""
    dreams = tmp_path / "dreams"
    dreams.mkdir()
    shutil.copy(small_checkpoint, dreams / "Test-UserGood-v0.safetensors")
    bad = {
        "array": lambda m: [1, 2],  # valid JSON, wrong shape: used to raise AttributeError at import
        "null_dream": lambda m: m.update(dream=None),
        "unknown_family": lambda m: m["model"].update(family="transformer"),
    }
    for name, edit in bad.items():
        rewrite_metadata(small_checkpoint, dreams / f"{name}.safetensors", edit, digest="restamp")
    # A well-formed dream that claims a real env's id.
    rewrite_metadata(small_checkpoint, dreams / "shadow.safetensors", lambda m: m["dream"].update(id="CartPole-v1"), digest="restamp")
    (dreams / "junk.safetensors").write_bytes(b"not a safetensors file")
    env = {**os.environ, "LEARNED_ENVS_HOME": str(tmp_path)}

    code = (
        "import gymnasium as gym, learned_envs\n"
        "print(gym.spec('CartPole-v1').entry_point)\n"
        "print(sorted(r['id'] for r in learned_envs.registered_dreams() if r['origin'] == 'user'))\n"
        "print(gym.make('Dream-CartPole-v0').reset(seed=0)[0].shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[:3] == [REAL_CARTPOLE, "['Test-UserGood-v0']", "(4,)"]
    for name in [*bad, "shadow", "junk"]:
        assert f"skipping dream {dreams / name}.safetensors" in out.stderr, (name, out.stderr[-3000:])
    assert f"{dreams / 'null_dream'}.safetensors: metadata key 'dream' should be a JSON object, not null" in out.stderr
    assert "as 'CartPole-v1': that id is already the environment" in out.stderr

    listed = subprocess.run([sys.executable, "-m", "learned_envs.cli", "list", "--json"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "Test-UserGood-v0" in {row["id"] for row in json.loads(listed.stdout)}


def test_a_dream_cannot_silently_replace_a_real_env(small_checkpoint):
    with pytest.raises(ValueError, match=r"as 'CartPole-v1': that id is already the environment .*CartPoleEnv.*force=True"):
        learned_envs.register_dream("CartPole-v1", small_checkpoint)
    assert gym.spec("CartPole-v1").entry_point == REAL_CARTPOLE and "CartPole-v1" not in _DREAMS


def test_force_replaces_a_non_dream_on_purpose(small_checkpoint):
    env_id = "Test-NotADream-v0"  # a throwaway id, so the real CartPole-v1 stays intact for other tests
    gym.register(id=env_id, entry_point=REAL_CARTPOLE)
    try:
        with pytest.raises(ValueError, match="already the environment"):
            learned_envs.register_dream(env_id, small_checkpoint)
        learned_envs.register_dream(env_id, small_checkpoint, force=True)
        assert gym.spec(env_id).entry_point == ENTRY_POINT
        assert gym.make(env_id).reset(seed=0)[0].shape == (4,)
    finally:
        gym.registry.pop(env_id, None)
        _DREAMS.pop(env_id, None)


def test_re_registering_a_dream_is_quiet(small_checkpoint, tmp_path):
    other = shutil.copy(small_checkpoint, tmp_path / "other.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no override warning from Gymnasium, no refusal
        learned_envs.register_dream("Test-Twice-v0", small_checkpoint)
        learned_envs.register_dream("Test-Twice-v0", other)
    assert gym.spec("Test-Twice-v0").kwargs["checkpoint"] == str(other.resolve())


def test_folder_scan_survives_an_unforeseen_error(small_checkpoint, tmp_path, monkeypatch):
    """Whatever a file makes the scan raise (here a RuntimeError no check foresaw) is a warning
    naming the file, never an exception out of ``import learned_envs``."""
    from learned_envs import registry

    shutil.copy(small_checkpoint, tmp_path / "Test-Unforeseen-v0.safetensors")

    def explode(path):
        raise RuntimeError("something no one planned for")

    monkeypatch.setattr(registry, "read_metadata", explode)
    with pytest.warns(UserWarning, match=r"skipping dream .*Test-Unforeseen-v0.safetensors: RuntimeError: something no one planned"):
        registry._register_folder(tmp_path, "user")
    assert "Test-Unforeseen-v0" not in gym.registry
