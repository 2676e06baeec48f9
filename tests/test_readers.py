"""Readers and writers for the datasets users already have: Minari, D4RL-style HDF5, SB3 replay
buffers and npz all give the same Transitions, and every bad file is named by file, field and row."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest

from learned_envs.data import DataError, DataWarning, load, save
from learned_envs.data.collecting import collect
from tests.helpers import TINY_FIT, env_spaces, write_d4rl

h5py = pytest.importorskip("h5py")

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")


@pytest.fixture(autouse=True)
def _minari_home(tmp_path, monkeypatch):
    """Minari ids resolve under a fresh folder, never the user's ~/.minari."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari_datasets"))


@pytest.fixture(scope="module")
def logged() -> dict:
    """Logged data of a Discrete-action env and of a Box-action env with a time limit inside the budget."""
    return {
        "CartPole-v1": collect("CartPole-v1", 300, seed=1, progress=False),
        "Pendulum-v1": collect("Pendulum-v1", 250, seed=2, progress=False),
    }


def assert_same(back, data, exact_actions: bool = True) -> None:
    for name in FIELDS:
        if name == "actions" and not exact_actions:
            np.testing.assert_allclose(back.actions, data.actions, rtol=0, atol=1e-6)
        else:
            np.testing.assert_array_equal(getattr(back, name), getattr(data, name), err_msg=name)
        assert getattr(back, name).dtype == getattr(data, name).dtype, name
    assert back.observation_space == data.observation_space and back.action_space == data.action_space
    np.testing.assert_array_equal(back.episode_ends, data.episode_ends)
    np.testing.assert_array_equal(back.episode_index(), data.episode_index())


TARGETS = {"npz": "d.npz", "hdf5": "d.hdf5", "h5": "d.h5", "sb3": "d.pkl", "minari-id": "minari:test/logged-v0",
           "minari-folder": "logged_dataset"}


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("kind", list(TARGETS))
def test_every_format_reads_back_the_same_transitions(logged, tmp_path, env_id, kind):
    data = logged[env_id]
    target = TARGETS[kind] if kind == "minari-id" else tmp_path / TARGETS[kind]
    save(data, target)
    back = load(target)
    # SB3 stores Box actions scaled to [-1, 1]; scaling there and back is float32 arithmetic.
    assert_same(back, data, exact_actions=not (kind == "sb3" and env_id == "Pendulum-v1"))
    assert back.metadata["source_env_id"] == env_id and back.metadata["behaviour_policy"] == {"kind": "random"}
    assert "spaces_inferred" not in back.metadata and "dropped_rows" not in back.metadata


def test_minari_dataset_written_here_opens_in_minari(logged):
    minari = pytest.importorskip("minari")
    data = logged["CartPole-v1"]
    save(data, "minari:test/cartpole-v0")
    dataset = minari.load_dataset("test/cartpole-v0")
    assert dataset.total_steps == len(data) and dataset.total_episodes == data.num_episodes
    assert dataset.observation_space == data.observation_space and dataset.action_space == data.action_space
    assert dataset.spec.env_spec.id == "CartPole-v1"
    rows = 0
    for episode in dataset.iterate_episodes():
        t = len(episode)
        np.testing.assert_array_equal(episode.observations[:-1], data.observations[rows : rows + t])
        np.testing.assert_array_equal(episode.observations[-1], data.next_observations[rows + t - 1])
        np.testing.assert_array_equal(episode.actions, data.actions[rows : rows + t])
        np.testing.assert_array_equal(episode.terminations, data.terminations[rows : rows + t])
        rows += t
    assert rows == len(data)
    assert "test/cartpole-v0" in minari.list_local_datasets()


def test_dataset_written_by_minari_reads_here(logged):
    minari = pytest.importorskip("minari")
    from minari.data_collector import EpisodeBuffer

    data = logged["CartPole-v1"]
    buffers = []
    for start, stop in _episode_bounds(data):
        obs = np.concatenate([data.observations[start:stop], data.next_observations[stop - 1 : stop]])
        buffers.append(EpisodeBuffer(observations=obs, actions=data.actions[start:stop], rewards=data.rewards[start:stop],
                                     terminations=data.terminations[start:stop], truncations=data.truncations[start:stop]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari nags about author, description and the like
        minari.create_dataset_from_buffers("test/native-v0", buffers, env="CartPole-v1")
    back = load("minari:test/native-v0")
    assert_same(back, data)
    assert back.metadata["source_env_id"] == "CartPole-v1" and back.metadata["minari_dataset_id"] == "test/native-v0"


def _episode_bounds(data):
    ends = np.flatnonzero(data.episode_ends) + 1
    return list(zip(np.concatenate([[0], ends[:-1]]), ends))


# --------------------------------------------------------------------------- SB3 replay buffers


class Recorder(gym.Wrapper):
    """Remembers every transition the env really made: (obs, action, reward, next_obs, terminated, truncated)."""

    def __init__(self, env):
        super().__init__(env)
        self.rows, self._obs = [], None

    def reset(self, **kwargs):
        self._obs, info = self.env.reset(**kwargs)
        return self._obs, info

    def step(self, action):
        nxt, reward, terminated, truncated, info = self.env.step(action)
        self.rows.append((self._obs, np.asarray(action), reward, nxt, terminated, truncated))
        self._obs = nxt
        return nxt, reward, terminated, truncated, info


def _learn_and_save(tmp_path, algo: str, env_id: str, n_envs: int, steps: int, **kwargs):
    """A real SB3 ``learn`` (no gradient steps: learning_starts is past the budget) and ``save_replay_buffer``."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.vec_env import DummyVecEnv

    recorders = [Recorder(gym.make(env_id)) for _ in range(n_envs)]
    venv = DummyVecEnv([(lambda r=r: r) for r in recorders])
    model = getattr(sb3, algo)("MlpPolicy", venv, learning_starts=10_000, seed=0, device="cpu", **kwargs)
    model.learn(steps)
    path = tmp_path / "buffer.pkl"
    model.save_replay_buffer(path)
    return path, [r.rows for r in recorders]


def _expected(rows, keep_last: int):
    rows = rows[-keep_last:]
    obs, act, rew, nxt, term, trunc = (np.array(col) for col in zip(*rows))
    return {"observations": obs, "actions": act, "rewards": rew.astype(np.float32), "next_observations": nxt,
            "terminations": term, "truncations": trunc}


@pytest.mark.parametrize("n_envs", [1, 2])
def test_sb3_buffer_from_dqn_learn_wraps_into_time_order(tmp_path, n_envs):
    # 300 steps into 128 slots: the buffer wraps, and only the newest 128 // n_envs rows per env remain.
    path, recorded = _learn_and_save(tmp_path, "DQN", "CartPole-v1", n_envs, 300, buffer_size=128)
    data = load(path)
    per_env = 128 // n_envs
    assert len(data) == per_env * n_envs and data.metadata["sb3_buffer"]["full"]
    for env, rows in enumerate(recorded):
        got = slice(env * per_env, (env + 1) * per_env)
        for name, value in _expected(rows, per_env).items():
            np.testing.assert_array_equal(getattr(data, name)[got], value, err_msg=f"env {env} {name}")
    # Each env's rows are one stream: no episode runs across the seam between envs.
    assert len(set(data.episode_ids[:per_env]) & set(data.episode_ids[per_env:])) == 0
    assert data.terminations.sum() >= 3 and not data.truncations[:-1].any()  # random CartPole falls well before 500 steps


def test_sb3_buffer_from_sac_unscales_actions_and_keeps_timeouts(tmp_path):
    path, (rows,) = _learn_and_save(tmp_path, "SAC", "Pendulum-v1", 1, 260, buffer_size=1000)
    data = load(path)
    expected = _expected(rows, len(rows))
    assert len(data) == 260 and data.metadata["sb3_buffer"]["actions_scaled"]
    np.testing.assert_allclose(data.actions, expected["actions"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(data.observations, expected["observations"])
    np.testing.assert_array_equal(data.next_observations, expected["next_observations"])
    # Pendulum's 200-step time limit is a truncation (SB3's timeouts), never a termination.
    assert data.truncations[199] and not data.terminations.any()
    assert data.action_space == gym.spaces.Box(-2.0, 2.0, (1,), np.float32)


def test_sb3_buffer_with_optimize_memory_usage_drops_rows_it_overwrote(tmp_path):
    path, (rows,) = _learn_and_save(tmp_path, "DQN", "CartPole-v1", 1, 300, buffer_size=128, optimize_memory_usage=True,
                                    replay_buffer_kwargs={"handle_timeout_termination": False})
    with pytest.warns(DataWarning, match="optimize_memory_usage"):
        data = load(path)
    expected = _expected(rows, 128)
    ends = expected["terminations"] | expected["truncations"]
    # Dropped: the oldest row (its observation slot was reused) and every episode end but the newest row.
    keep = ~ends
    keep[0], keep[-1] = False, True
    assert data.metadata["dropped_rows"]["count"] == 128 - keep.sum() > 1
    for name in ("observations", "actions", "rewards", "next_observations"):
        np.testing.assert_array_equal(getattr(data, name), expected[name][keep], err_msg=name)
    assert data.num_episodes >= ends[:-1].sum()  # the dropped end rows still separate the episodes


def _raw_buffer(tmp_path, **changes):
    from stable_baselines3.common.buffers import ReplayBuffer

    space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    buffer = ReplayBuffer(10, gym.spaces.Box(-np.inf, np.inf, (3,), np.float32), space, device="cpu")
    for i in range(6):
        buffer.add(np.full((1, 3), i, np.float32), np.full((1, 3), i + 1, np.float32), np.array([[0.5]]), np.array([1.0]),
                   np.array([i == 5]), [{}])
    return _pickled(buffer, tmp_path / "raw.pkl", changes)


def _pickled(buffer, path, changes):
    """``buffer`` with ``changes`` (field: (index, value)) written in, pickled to ``path``."""
    for name, (index, value) in changes.items():
        getattr(buffer, name)[index] = value
    path.write_bytes(pickle.dumps(buffer))
    return path


def test_sb3_bad_buffers_are_named(tmp_path):
    (tmp_path / "text.pkl").write_text("not a pickle")
    with pytest.raises(DataError, match=r"text\.pkl: not a pickled SB3 replay buffer"):
        load(tmp_path / "text.pkl")
    (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"observations": []}))
    with pytest.raises(DataError, match=r"dict\.pkl: holds a dict, not an SB3 ReplayBuffer"):
        load(tmp_path / "dict.pkl")
    with pytest.raises(DataError, match=r"raw\.pkl: field 'rewards', row 3: is NaN.*buffer index 3, env 0"):
        load(_raw_buffer(tmp_path, rewards=((3, 0), np.nan)))
    with pytest.raises(DataError, match=r"field 'actions', row 2: .*outside \[-1, 1\].*actions_scaled=False"):
        load(_raw_buffer(tmp_path, actions=((2, 0, 0), 1.7)))
    from learned_envs.data.sb3_buffer import load_sb3_buffer

    raw = load_sb3_buffer(_raw_buffer(tmp_path, actions=((2, 0, 0), 1.7)), actions_scaled=False)
    assert raw.actions[2, 0] == np.float32(1.7) and raw.actions[0, 0] == 0.5
    assert load(_raw_buffer(tmp_path)).actions[0, 0] == 1.0  # scaled 0.5 is three quarters of the way up [-2, 2]


def _wrapped_buffer(tmp_path, ends_every=(7, 11), **changes):
    """An SB3 buffer of 2 envs x 50 rows that took 88 steps, so it wrapped (pos 38, full). Env e's
    observation at step t is 100 e + t; env e ends an episode every ``ends_every[e]`` steps."""
    from stable_baselines3.common.buffers import ReplayBuffer

    box = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    buffer = ReplayBuffer(100, box, gym.spaces.Discrete(2), device="cpu", n_envs=2, handle_timeout_termination=True)  # 50 rows per env
    for t in range(88):
        obs = np.array([[t], [100 + t]], np.float32)
        ends = np.array([(t + 1) % every == 0 for every in ends_every])
        buffer.add(obs, obs + 1, np.zeros((2, 1)), np.ones(2), ends, [{}, {}])
    assert buffer.full and buffer.pos == 38
    return _pickled(buffer, tmp_path / "wrapped.pkl", changes)


def test_sb3_bad_flag_names_buffer_index_and_env(tmp_path):
    # Env 1's rows are read oldest first (index 38, 39, 40, ...): index 40 is its third row, which must not be reported.
    named = r"wrapped\.pkl: field 'dones': value 3\.0 is not a boolean \(in the file: buffer index 40, env 1\)$"
    with pytest.raises(DataError, match=named):
        load(_wrapped_buffer(tmp_path, dones=((40, 1), 3)))
    with pytest.raises(DataError, match=r"field 'timeouts': value -1\.0 is not a boolean \(in the file: buffer index 2, env 0\)$"):
        load(_wrapped_buffer(tmp_path, timeouts=((2, 0), -1)))


def test_wrapped_sb3_buffer_marks_partial_episodes_for_every_format(tmp_path):
    from learned_envs.data import concatenate

    data = load(_wrapped_buffer(tmp_path))
    # Each env's oldest rows (observations 38 and 138) continue an episode begun before the buffer's window.
    assert data.metadata["partial_episodes"] == [int(data.episode_ids[0]), int(data.episode_ids[50])]
    assert np.flatnonzero(data.partial_starts()).tolist() == [0, 50]
    starts = data.episode_starts(include_partial=False)[:, 0]
    assert 38 not in starts and 138 not in starts and 42 in starts  # env 0 ends an episode at step 41
    assert len(starts) == data.num_episodes - 2 and len(data.episode_starts()) == data.num_episodes
    for target in ("d.npz", "d.hdf5", "d.pkl", "ds"):  # writers with and without episode ids of their own
        # An SB3 buffer has no ids: the seam between the two envs' rows is written as a time-out.
        with pytest.warns(DataWarning, match="1 episode ends have neither") if target == "d.pkl" else contextlib.nullcontext():
            back = load(save(data, tmp_path / target))
        np.testing.assert_array_equal(back.partial_starts(), data.partial_starts(), err_msg=target)
    merged = concatenate([data, data])
    np.testing.assert_array_equal(merged.partial_starts(), np.tile(data.partial_starts(), 2))
    assert data.select(np.arange(60, 100)).metadata["partial_episodes"] == []


def test_fit_leaves_partial_episodes_out_of_the_start_states(tmp_path):
    from learned_envs.checkpoint import load_checkpoint
    from learned_envs.fitting import FitConfig, fit

    data = load(_wrapped_buffer(tmp_path))
    ckpt = load_checkpoint(fit(data, tmp_path / "m.safetensors", config=FitConfig(**TINY_FIT), progress=False))
    np.testing.assert_array_equal(ckpt.start_states.numpy(), data.episode_starts(include_partial=False))
    # With no episode starting inside the window, the mid-episode states are all there is: said loudly.
    only_partial = load(_wrapped_buffer(tmp_path, ends_every=(1000, 1000)))
    with pytest.warns(UserWarning, match=r"every one of the 2 episodes began before the data"):
        ckpt = load_checkpoint(fit(only_partial, tmp_path / "p.safetensors", config=FitConfig(**TINY_FIT), progress=False))
    assert sorted(ckpt.start_states.numpy()[:, 0].tolist()) == [38.0, 138.0]


# --------------------------------------------------------------------------- D4RL-style HDF5


def test_d4rl_without_next_observations_never_pairs_across_episodes(logged, tmp_path):
    data = logged["CartPole-v1"]
    path = write_d4rl(tmp_path / "plain.hdf5", data, drop=("next_observations",))
    with pytest.warns(DataWarning, match=r"dropped \d+ rows"):
        back = load(path, *env_spaces("CartPole-v1"))
    keep = ~data.episode_ends  # each episode's last row has no next observation in the file
    assert back.metadata["dropped_rows"]["count"] == data.num_episodes == len(data) - len(back)
    np.testing.assert_array_equal(back.next_observations, data.next_observations[keep])
    np.testing.assert_array_equal(back.observations, data.observations[keep])
    np.testing.assert_array_equal(back.episode_ids, data.episode_index()[keep])
    lengths = np.diff(np.concatenate([[0], np.flatnonzero(data.episode_ends) + 1]))
    assert back.num_episodes == (lengths > 1).sum()  # a one-row episode has nothing left
    assert "spaces_inferred" not in back.metadata


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"drop": ("timeouts",)}, r"bad\.hdf5: field 'timeouts': missing \(a D4RL-style file needs"),
        ({"rewards": "nan@7"}, r"bad\.hdf5: field 'rewards', row 7: is NaN"),
        ({"actions": "short"}, r"bad\.hdf5: field 'actions': has 299 rows, but 'observations' has 300"),
        ({"terminals": "two@4"}, r"bad\.hdf5: field 'terminals', row 4: value 2 is not a boolean"),
        ({"next_observations": "shift@10"}, r"bad\.hdf5: field 'next_observations', row 10: does not match the observation of row 11"),
    ],
    ids=["missing-key", "nan", "mismatched-lengths", "non-boolean-flag", "next-observation-disagrees"],
)
def test_d4rl_bad_files_are_named(logged, tmp_path, change, pattern):
    data = logged["CartPole-v1"]
    kwargs = {}
    for name, how in change.items():
        if name == "drop":
            kwargs["drop"] = how
            continue
        value = getattr(data, {"terminals": "terminations"}.get(name, name)).copy()
        if how == "short":
            value = value[:-1]
        else:
            kind, row = how.split("@")
            value = value.astype(np.int64) if kind == "two" else value
            value[int(row)] = {"nan": np.nan, "two": 2, "shift": value[int(row)] + 1.0}[kind]
        kwargs[name] = value
    assert not data.episode_ends[10], "the continuity case needs row 10 inside an episode"
    with pytest.raises(DataError, match=pattern):
        load(write_d4rl(tmp_path / "bad.hdf5", data, **kwargs))


def test_hdf5_that_is_not_hdf5_or_not_d4rl(logged, tmp_path):
    (tmp_path / "text.hdf5").write_text("hello")
    with pytest.raises(DataError, match=r"text\.hdf5: not a readable HDF5 file"):
        load(tmp_path / "text.hdf5")
    folder = save(logged["CartPole-v1"], tmp_path / "ds")
    copy = tmp_path / "copied.h5"
    copy.write_bytes((folder / "data" / "main_data.hdf5").read_bytes())
    with pytest.raises(DataError, match=r"copied\.h5: field 'observations': missing .*looks like a Minari main_data\.hdf5"):
        load(copy)
    # The data file inside a Minari dataset reads as the whole dataset.
    assert len(load(folder / "data" / "main_data.hdf5")) == 300


def test_d4rl_without_spaces_infers_them_and_says_so(logged, tmp_path):
    back = load(write_d4rl(tmp_path / "nospace.hdf5", logged["CartPole-v1"]))
    assert back.action_space == gym.spaces.Discrete(2)
    assert back.metadata["spaces_inferred"] == ["observation_space", "action_space"]


def test_given_space_that_contradicts_the_file(logged, tmp_path):
    path = save(logged["CartPole-v1"], tmp_path / "d.hdf5")
    with pytest.raises(DataError, match=r"d\.hdf5: field 'observation_space': the data's own"):
        load(path, gym.spaces.Box(-1, 1, (3,), np.float32), None)


# --------------------------------------------------------------------------- Minari


@pytest.fixture
def minari_copy(logged, tmp_path):
    return save(logged["CartPole-v1"], tmp_path / "ds")


def _edit_episode(folder, name, field, value=None):
    with h5py.File(folder / "data" / "main_data.hdf5", "a") as fh:
        del fh[f"{name}/{field}"]
        if value is not None:
            fh[name].create_dataset(field, data=value)


def test_minari_bad_datasets_are_named(minari_copy, logged):
    data = logged["CartPole-v1"]
    with pytest.raises(DataError, match=r"not a Minari dataset: no data/metadata\.json \(looked under MINARI_DATASETS_PATH="):
        load("minari:test/absent-v0")
    start, stop = _episode_bounds(data)[3]
    obs = np.concatenate([data.observations[start:stop], data.next_observations[stop - 1 : stop]])
    obs[2, 1] = np.nan
    _edit_episode(minari_copy, "episode_3", "observations", obs)
    with pytest.raises(DataError, match=rf"main_data\.hdf5: field 'observations', row {start + 2}: is NaN .*episode_3, step 2"):
        load(minari_copy)
    _edit_episode(minari_copy, "episode_3", "observations", obs[:-2])
    with pytest.raises(DataError, match=r"field 'episode_3/observations': has \d+ rows, expected \d+ \(one more than"):
        load(minari_copy)
    _edit_episode(minari_copy, "episode_1", "rewards")
    with pytest.raises(DataError, match=r"main_data\.hdf5: field 'episode_1/rewards': missing"):
        load(minari_copy)


def test_minari_bad_metadata_is_named(minari_copy):
    meta_path = minari_copy / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "total_episodes": meta["total_episodes"] + 1}))
    with pytest.raises(DataError, match=r"holds \d+ episode groups, but metadata\.json says total_episodes="):
        load(minari_copy)
    dict_space = {"type": "Dict", "subspaces": {}}
    meta_path.write_text(json.dumps({**meta, "observation_space": json.dumps(dict_space)}))
    with pytest.raises(DataError, match=r"metadata\.json: field 'observation_space': unsupported"):
        load(minari_copy)
    meta_path.write_text("{not json")
    with pytest.raises(DataError, match=r"metadata\.json: not readable JSON"):
        load(minari_copy)


def test_minari_writer_replaces_only_datasets(logged, tmp_path):
    data = logged["CartPole-v1"]
    mine = tmp_path / "precious"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a Minari dataset; refusing"):
        save(data, mine, format="minari")
    assert (mine / "notes.txt").read_text() == "keep me"
    folder = save(data.select(np.arange(100)), tmp_path / "ds")
    save(data, folder)  # a dataset is replaced whole
    assert len(load(folder)) == 300 and not list(tmp_path.glob(".ds.*"))
    with pytest.raises(ValueError, match="Minari dataset ids look like"):
        save(data, "minari:no_version")


def test_source_sha256_covers_minari_datasets(logged, tmp_path):
    from learned_envs.data import source_sha256

    save(logged["CartPole-v1"], "minari:test/hashed-v0")
    folder = save(logged["CartPole-v1"], tmp_path / "same")
    assert source_sha256("minari:test/hashed-v0") != source_sha256(folder)  # metadata.json names the dataset id
    before = source_sha256(folder)
    save(logged["CartPole-v1"].select(np.arange(299)), folder)
    assert source_sha256(folder) != before and len(before) == 64
    npz = save(logged["CartPole-v1"], tmp_path / "d.npz")
    assert source_sha256(npz) == hashlib.sha256(npz.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- dispatch and CLI


def test_unknown_or_contradicting_formats(logged, tmp_path):
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(DataError, match=r"data\.csv: unknown data format '\.csv'"):
        load(tmp_path / "data.csv")
    with pytest.raises(ValueError, match=r"names the npz format, not hdf5"):
        save(logged["CartPole-v1"], tmp_path / "x.npz", format="hdf5")


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "learned_envs.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_collects_a_minari_dataset_that_reads_back(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari_cli"))
    env = dict(os.environ)
    done = _cli("collect", "CartPole-v1", "--steps", "200", "--out", "minari:cli/cartpole-v0", "--format", "minari", env=env)
    assert done.returncode == 0, done.stderr
    assert "wrote 200 transitions" in done.stdout
    data = load("minari:cli/cartpole-v0")
    assert len(data) == 200 and data.metadata["source_env_id"] == "CartPole-v1" and data.truncations[-1]
    bad = _cli("collect", "CartPole-v1", "--steps", "10", "--out", str(tmp_path / "x.npz"), "--format", "sb3", env=env)
    assert bad.returncode == 2 and "names the npz format, not sb3" in bad.stderr
