"""Bad descriptions and bad episode ids at the door: each is a DataError naming the file, the
field and (for row data) the first bad row, never a bare JSONDecodeError, KeyError or ValueError."""

from __future__ import annotations

import numpy as np
import pytest

from learned_envs.data import DataError, as_transitions, load
from learned_envs.data.transitions import FIELDS
from tests.helpers import env_spaces, good, write_d4rl, write_raw_npz  # noqa: F401  (good is a fixture)

# (stored text, what the message must say) for a field holding JSON.
BAD_SPACES = {
    "not-json": ("oops", r"is not valid JSON"),
    "box-missing-keys": ('{"type": "Box"}', r"a Box space description needs shape, dtype, low, high; missing shape, dtype, low, high"),
    "unknown-space": ('{"type": "Dict"}', r"unsupported space type 'Dict': learned-envs supports Box and Discrete"),
    "not-an-object": ('"Box"', r"a space description is a JSON object with a 'type'"),
    "empty-discrete": ('{"type": "Discrete", "n": 0}', r"unreadable Discrete space description"),
}
BAD_METADATA = {
    "not-json": ("{not json", r"is not valid JSON"),
    "not-an-object": ("[1, 2]", r"must be a JSON object, not list"),
}


def _cases():
    """(field, stored text, message pattern) for every bad JSON field a data file can hold."""
    spaces = [(field, *case) for field in ("observation_space", "action_space") for case in BAD_SPACES.values()]
    return spaces + [("metadata", *case) for case in BAD_METADATA.values()]


CASE_IDS = [f"{field}-{name}" for field in ("observation_space", "action_space") for name in BAD_SPACES] + [
    f"metadata-{name}" for name in BAD_METADATA
]


@pytest.mark.parametrize("field, text, pattern", _cases(), ids=CASE_IDS)
def test_npz_bad_json_names_file_and_field(good, tmp_path, field, text, pattern):  # noqa: F811
    path = write_raw_npz(tmp_path / "bad.npz", good, **{field: np.array(text)})
    with pytest.raises(DataError, match=rf"bad\.npz: field '{field}': {pattern}"):
        load(path)


@pytest.mark.parametrize("field, text, pattern", _cases(), ids=CASE_IDS)
def test_hdf5_bad_json_attribute_names_file_and_attribute(good, tmp_path, field, text, pattern):  # noqa: F811
    h5py = pytest.importorskip("h5py")

    path = write_d4rl(tmp_path / "bad.hdf5", good)
    with h5py.File(path, "a") as fh:
        fh.attrs[field] = text
    with pytest.raises(DataError, match=rf"bad\.hdf5: field 'attribute {field}': {pattern}"):
        load(path)


# --------------------------------------------------------------------------- episode ids


def _ids_case(good, kind):  # noqa: F811
    """Episode ids with one kind of fault, and the message (with the first bad row) it must give."""
    ids = good.episode_index().astype(np.float64)
    if kind == "nan":
        ids[5] = np.nan
        return ids, r"field 'episode_ids', row 5: is NaN or infinite"
    if kind == "fraction":
        ids[3] = 0.5
        return ids, r"field 'episode_ids', row 3: value 0\.5 is not a whole number"
    if kind == "interleaved":
        return np.arange(len(good)) % 2, r"field 'episode_ids', row 2: episode id 0 comes back after other episodes' rows"
    return np.array(["a"] * len(good)), r"field 'episode_ids': has dtype <U1, expected integers"


ID_FAULTS = ["nan", "fraction", "interleaved", "text"]


@pytest.mark.parametrize("kind", ID_FAULTS)
def test_npz_bad_episode_ids_name_file_and_first_row(good, tmp_path, kind):  # noqa: F811
    ids, pattern = _ids_case(good, kind)
    with pytest.raises(DataError, match=rf"bad\.npz: {pattern}"):
        load(write_raw_npz(tmp_path / "bad.npz", good, episode_ids=ids))


@pytest.mark.parametrize("kind", ID_FAULTS[:-1])  # HDF5 text columns are refused on reading, as any field's
def test_hdf5_bad_episode_ids_are_caught_before_rows_are_paired(good, tmp_path, kind):  # noqa: F811
    # Without next_observations the reader renumbers episodes from the ids: they must be checked first.
    pytest.importorskip("h5py")

    ids, pattern = _ids_case(good, kind)
    path = write_d4rl(tmp_path / "bad.hdf5", good, drop=("next_observations",), episode_ids=ids)
    with pytest.raises(DataError, match=rf"bad\.hdf5: {pattern}"):
        load(path, *env_spaces("CartPole-v1"))


def test_whole_float_episode_ids_are_accepted(good, tmp_path):  # noqa: F811
    back = load(write_raw_npz(tmp_path / "ok.npz", good, episode_ids=good.episode_index().astype(np.float32)))
    assert back.episode_ids.dtype == np.int64
    np.testing.assert_array_equal(back.episode_index(), good.episode_index())


def test_as_transitions_names_its_source(good):  # noqa: F811
    arrays = {name: getattr(good, name) for name in FIELDS}
    arrays["episode_ids"] = np.arange(len(good)) % 3
    with pytest.raises(DataError, match=r"my log: field 'episode_ids', row 3: episode id 0 comes back .*end at row 0"):
        as_transitions(arrays, good.observation_space, good.action_space, "my log")


def test_partial_episodes_must_name_episodes_the_data_has(good):  # noqa: F811
    arrays = {name: getattr(good, name) for name in FIELDS}
    with pytest.raises(DataError, match=r"my log: field 'metadata partial_episodes': lists episode ids \[999\] that no row carries"):
        as_transitions(arrays, good.observation_space, good.action_space, "my log", {"partial_episodes": [999]})
    with pytest.raises(DataError, match=r"must be a list of episode ids"):
        as_transitions(arrays, good.observation_space, good.action_space, "my log", {"partial_episodes": "0"})
