"""``DreamVectorEnv`` against Gymnasium's own vector conventions (``SyncVectorEnv`` is the reference)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import batch_space

import learned_envs  # noqa: F401  (registers the shipped dreams)
from learned_envs.dreams.vector import DreamVectorEnv
from tests._determinism import DETERMINISTIC, pin_start_states

MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP]


def in_start_pool(obs: np.ndarray, core) -> np.ndarray:
    """``[R, D]`` observations -> ``[R]`` bool: each equals one of ``core``'s logged starts."""
    pool = core.start_states
    return np.isclose(obs[:, None, :], pool[None, :, :]).all(-1).any(-1)


def test_make_vec_builds_a_batched_dream(small_dream_id):
    envs = gym.make_vec(small_dream_id, num_envs=3)
    assert isinstance(envs, DreamVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.metadata["render_fps"] == gym.make(small_dream_id).metadata["render_fps"] == 50  # CartPole's
    assert envs.core.max_episode_steps == gym.spec(small_dream_id).max_episode_steps
    assert envs.observation_space == batch_space(envs.single_observation_space, 3)
    assert envs.action_space == batch_space(envs.single_action_space, 3)
    obs, info = envs.reset(seed=0)
    assert info == {} and obs in envs.observation_space
    obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert obs in envs.observation_space and obs.dtype == envs.single_observation_space.dtype
    assert rewards.shape == terminated.shape == truncated.shape == (3,)
    assert (rewards.dtype, terminated.dtype, truncated.dtype) == (np.float64, np.bool_, np.bool_)
    assert {"disagreement", "_disagreement", "clipped_dims", "_clipped_dims"} <= set(info)
    assert info["disagreement"].shape == (3,) and info["_disagreement"].all()
    envs.close()


def assert_same_infos(ours: dict, ref: dict, where: str) -> None:
    """Same keys and masks; values equal (dtypes may differ: the core keeps float32, _add_info float64)."""
    assert set(ours) == set(ref), f"{where}: info keys {sorted(ours)} != {sorted(ref)}"
    for key, value in ref.items():
        if key == "final_obs":
            assert [v is None for v in ours[key]] == [v is None for v in value], where
            assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(ours[key], value) if b is not None), where
        elif isinstance(value, dict):
            assert_same_infos(ours[key], value, f"{where}/{key}")
        else:
            assert np.array_equal(ours[key], value) if key.startswith("_") else np.allclose(ours[key], value, atol=1e-5), f"{where}: {key}"


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_autoreset_matches_sync_vector_env(small_dream_id, mode):
    """Step for step, DreamVectorEnv returns what SyncVectorEnv over single DreamEnvs returns."""
    n, limit = 5, 12
    ours = gym.make_vec(small_dream_id, num_envs=n, max_episode_steps=limit, autoreset_mode=mode, **DETERMINISTIC)
    ref = SyncVectorEnv([lambda: gym.make(small_dream_id, max_episode_steps=limit, **DETERMINISTIC)] * n, autoreset_mode=mode)
    assert ours.metadata["autoreset_mode"] == ref.metadata["autoreset_mode"] == mode
    for core in [ours.core, *(env.unwrapped.core for env in ref.envs)]:
        pin_start_states(core)
    (obs, info), (ref_obs, ref_info) = ours.reset(seed=0), ref.reset(seed=0)
    np.testing.assert_allclose(obs, ref_obs, atol=1e-6)
    assert info == ref_info == {}
    rng = np.random.default_rng(0)
    ends = {"terminated": 0, "truncated": 0}
    for t in range(40):
        actions = rng.integers(2, size=n)
        obs, rew, term, trunc, info = ours.step(actions)
        ref_obs, ref_rew, ref_term, ref_trunc, ref_info = ref.step(actions)
        np.testing.assert_allclose(obs, ref_obs, atol=1e-5, err_msg=f"step {t}")
        np.testing.assert_allclose(rew, ref_rew, atol=1e-5, err_msg=f"step {t}")
        np.testing.assert_array_equal(term, ref_term, err_msg=f"step {t}")
        np.testing.assert_array_equal(trunc, ref_trunc, err_msg=f"step {t}")
        assert_same_infos(info, ref_info, f"step {t}")
        ends["terminated"] += int(term.sum())
        ends["truncated"] += int((trunc & ~term).sum())
    assert ends["terminated"] > 0 and ends["truncated"] > 0, f"the run must cover both ends: {ends}"


def test_next_step_reset_ignores_the_action(small_dream_id):
    """With a one-step limit every dream ends on every other step, so the reset step is known."""
    envs = gym.make_vec(small_dream_id, num_envs=4, max_episode_steps=1)
    envs.reset(seed=1)
    _, _, term, trunc, info = envs.step(np.zeros(4, dtype=np.int64))
    assert (term | trunc).all() and info["_disagreement"].all()
    obs, rew, term, trunc, info = envs.step(np.ones(4, dtype=np.int64))
    assert in_start_pool(obs, envs.core).all(), "the reset step returns first observations"
    assert not rew.any() and not term.any() and not trunc.any()
    assert info == {}, "resetting rows carry their (empty) reset info, not the discarded step's"
    _, _, term, trunc, info = envs.step(np.ones(4, dtype=np.int64))
    assert (term | trunc).all() and info["_disagreement"].all()


def test_same_step_final_obs_is_the_next_step_terminal_obs(small_dream_id):
    """Same seed and actions: SAME_STEP's final_obs/final_info are NEXT_STEP's last step."""
    kwargs = dict(num_envs=6, max_episode_steps=4)
    same = gym.make_vec(small_dream_id, autoreset_mode="SameStep", **kwargs)
    nxt = gym.make_vec(small_dream_id, **kwargs)
    same.reset(seed=5)
    nxt.reset(seed=5)
    for t in range(4):
        actions = np.full(6, t % 2)
        obs, _, term, trunc, info = same.step(actions)
        ref_obs, _, ref_term, ref_trunc, ref_info = nxt.step(actions)
        done = ref_term | ref_trunc
        np.testing.assert_array_equal(term | trunc, done)
        if done.any():
            break
    assert done.any()
    np.testing.assert_array_equal(info["_final_obs"], done)
    np.testing.assert_array_equal(info["_final_info"], done)
    np.testing.assert_allclose(np.stack(info["final_obs"][done]), ref_obs[done])
    assert all(info["final_obs"][i] is None for i in np.flatnonzero(~done))
    np.testing.assert_allclose(info["final_info"]["disagreement"][done], ref_info["disagreement"][done])
    # Rows that reset carry no step info at top level ({} when every row reset).
    np.testing.assert_array_equal(info.get("_disagreement", np.zeros(6, dtype=bool)), ~done)
    np.testing.assert_allclose(obs[~done], ref_obs[~done])
    assert in_start_pool(obs[done], same.core).all()


def rollout(envs, seed, steps: int = 15) -> list[np.ndarray]:
    obs, _ = envs.reset(seed=seed)
    out = [obs]
    for t in range(steps):
        obs, rew, *_ = envs.step(np.arange(envs.num_envs) % 2)
        out += [obs, rew]
    return out


def test_seeding_is_reproducible(small_dream_id):
    envs = gym.make_vec(small_dream_id, num_envs=8)
    first, again = rollout(envs, 3), rollout(envs, 3)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], rollout(envs, 4)[0])
    # A list seeds as SyncVectorEnv's does, every entry counting: same list, same run; any entry changed, another.
    listed = rollout(envs, list(range(8)))
    assert all(np.array_equal(a, b) for a, b in zip(listed, rollout(envs, list(range(8)))))
    assert not np.array_equal(listed[0], rollout(envs, [0, 1, 2, 3, 4, 5, 6, 99])[0])
    with pytest.raises(ValueError, match="num_envs=8"):
        envs.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="mixes None"):
        envs.reset(seed=[3] + [None] * 7)


def test_reset_mask_and_initial_observation(small_dream_id):
    envs = gym.make_vec(small_dream_id, num_envs=4)
    before, _ = envs.reset(seed=0)
    mask = np.array([True, False, True, False])
    start = np.array([0.01, -0.02, 0.03, 0.0], dtype=np.float32)
    obs, info = envs.reset(options={"reset_mask": mask, "initial_observation": start})
    assert info == {}
    np.testing.assert_array_equal(obs[mask], np.stack([start, start]))
    np.testing.assert_array_equal(obs[~mask], before[~mask])
    per_env = np.arange(16, dtype=np.float32).reshape(4, 4) / 100
    obs, _ = envs.reset(options={"reset_mask": mask, "initial_observation": per_env})
    np.testing.assert_array_equal(obs[mask], per_env[mask])
    obs, _ = envs.reset(options={"initial_observation": per_env})
    np.testing.assert_array_equal(obs, per_env)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"reset_mask": [True, False, True, False]}, TypeError, "numpy array"),
        ({"reset_mask": np.ones(3, dtype=bool)}, ValueError, "shape"),
        ({"reset_mask": np.ones(4, dtype=int)}, TypeError, "dtype"),
        ({"reset_mask": np.zeros(4, dtype=bool)}, ValueError, "at least one True"),
        ({"initial_observation": np.zeros(3)}, ValueError, "initial_observation must have shape"),
        ({"initial_observation": np.full(4, 99.0)}, ValueError, "outside the observation space"),
    ],
)
def test_bad_reset_options_say_what_is_wrong(small_dream_id, options, error, message):
    envs = gym.make_vec(small_dream_id, num_envs=4)
    envs.reset(seed=0)
    with pytest.raises(error, match=message):
        envs.reset(options=options)


def test_bad_actions_name_the_row(small_dream_id):
    envs = gym.make_vec(small_dream_id, num_envs=4)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="row 2"):
        envs.step(np.array([0, 1, 5, 0]))
    with pytest.raises(ValueError, match="expected 4 action"):
        envs.step(np.array([0, 1]))


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_one_host_crossing_per_step_even_when_dreams_reset(small_dream_id, mode, monkeypatch):
    """With a 2-step limit half the steps reset dreams; a reset is decided on the host, so it adds
    no device->host copy (each ``Tensor.cpu``/``item``/``tolist`` would be one on CUDA)."""
    envs = gym.make_vec(small_dream_id, num_envs=8, max_episode_steps=2, autoreset_mode=mode)
    envs.reset(seed=0)
    crossings = []
    for name in ("cpu", "item", "tolist", "__int__", "__float__", "__bool__"):  # .numpy() needs a CPU tensor already
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: (crossings.append(_n), _o(self, *a, **k))[1])
    steps = 10
    resets = 0
    for _ in range(steps):
        _, _, term, trunc, _ = envs.step(np.zeros(8, dtype=np.int64))
        resets += int((term | trunc).sum())
    monkeypatch.undo()
    assert resets > 0
    assert crossings == ["cpu"] * steps


def test_time_limit_is_per_dream(small_dream_id):
    """Truncation counts each dream's own steps, also after a partial reset."""
    limit = 5
    envs = gym.make_vec(small_dream_id, num_envs=4, max_episode_steps=limit, autoreset_mode="SameStep", out_of_bounds="clip")
    envs.reset(seed=2)
    age = np.zeros(4, dtype=int)
    truncations = 0
    for t in range(20):
        if t == 2:
            envs.reset(options={"reset_mask": np.array([True, False, False, False])})
            age[0] = 0
        _, _, term, trunc, _ = envs.step(np.zeros(4, dtype=np.int64))
        age += 1
        np.testing.assert_array_equal(trunc, age == limit, err_msg=f"step {t}, ages {age}")
        truncations += int(trunc.sum())
        age[term | trunc] = 0
    assert truncations > 0


def test_disabled_autoreset_needs_an_explicit_reset(small_dream_id):
    envs = gym.make_vec(small_dream_id, num_envs=2, max_episode_steps=2, autoreset_mode=AutoresetMode.DISABLED)
    envs.reset(seed=0)
    for _ in range(2):
        _, _, term, trunc, _ = envs.step(np.zeros(2, dtype=np.int64))
    done = term | trunc
    with pytest.raises(RuntimeError, match="reset_mask"):
        envs.step(np.zeros(2, dtype=np.int64))
    envs.reset(options={"reset_mask": done})
    _, _, _, _, info = envs.step(np.zeros(2, dtype=np.int64))
    assert info["_disagreement"].all()


def test_record_episode_statistics_counts_whole_episodes(small_dream_id):
    """A Gymnasium vector wrapper that relies on the autoreset bookkeeping sees true episode lengths."""
    limit = 6
    envs = gym.wrappers.vector.RecordEpisodeStatistics(
        gym.make_vec(small_dream_id, num_envs=3, max_episode_steps=limit, out_of_bounds="clip")
    )
    envs.reset(seed=0)
    lengths = []
    for _ in range(3 * limit):
        _, _, _, _, info = envs.step(np.zeros(3, dtype=np.int64))
        if "episode" in info:
            lengths += info["episode"]["l"][info["_episode"]].tolist()
    assert lengths and all(1 <= n <= limit for n in lengths)


@pytest.mark.parametrize("num_envs", [1, 7, 4096])
def test_any_number_of_dreams_steps(small_checkpoint, num_envs):
    envs = DreamVectorEnv(checkpoint=str(small_checkpoint), num_envs=num_envs, max_episode_steps=50)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (num_envs, 4)
    for _ in range(3):
        obs, rew, term, trunc, info = envs.step(envs.action_space.sample())
    assert obs in envs.observation_space and np.isfinite(rew).all() and info["disagreement"].shape == (num_envs,)


def test_shipped_dream_4096():
    if "Dream-CartPole-v0" not in gym.registry:
        pytest.skip("checkpoints/Dream-CartPole-v0.safetensors is not built yet")
    envs = gym.make_vec("Dream-CartPole-v0", num_envs=4096)
    obs, _ = envs.reset(seed=0)
    obs, *_ = envs.step(envs.action_space.sample())
    assert isinstance(envs, DreamVectorEnv) and obs.shape == (4096, 4) and obs in envs.observation_space


def test_render_gives_one_frame_per_dream(small_dream_id):
    envs = gym.make_vec(small_dream_id, num_envs=2, render_mode="rgb_array")
    envs.reset(seed=0)
    frames = envs.render()
    assert isinstance(frames, tuple) and len(frames) == 2
    assert all(f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3 for f in frames)
    envs.close()
    assert envs.closed and envs._frames._renderer is None  # the source env was closed too


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(small_dream_id):
    cpu = gym.make_vec(small_dream_id, num_envs=16, device="cpu", **DETERMINISTIC)
    cuda = gym.make_vec(small_dream_id, num_envs=16, device="cuda", **DETERMINISTIC)
    assert cuda.core.state.device.type == "cuda"
    pin_start_states(cpu.core)
    pin_start_states(cuda.core)
    np.testing.assert_array_equal(cuda.reset(seed=0)[0], cpu.reset(seed=0)[0])
    for _ in range(5):
        actions = np.zeros(16, dtype=np.int64)
        np.testing.assert_allclose(cuda.step(actions)[0], cpu.step(actions)[0], atol=1e-4)
