import pickle

import numpy as np
import pytest

from balm.data.errors import DataError
from balm.data.label_space import IEMOCAP_LABELS
from balm.data.mmgcn_pickle import read_mmgcn_pickle
from data_builders import TEST, TRAIN, build_balm_dict, expected_columns


def _as_tuple(d, extra=False):
    ids = {v: [f"{v}_{i}" for i in range(len(d["label"][v]))] for v in d["label"]}
    out = (
        ids,
        d["speaker"],
        d["label"],
        d["text"],
        d["audio"],
        d["visual"],
        d["sentence"],
        set(d["trainVid"]),  # the public file stores Python sets
        set(d["testVid"]),
    )
    return out + ({"extra": 1},) if extra else out


def _write(tmp_path, obj):
    path = tmp_path / "IEMOCAP_features.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=2))  # protocol 2, as the Python 2 era file
    return path


@pytest.mark.parametrize("extra", [False, True])
def test_tuple_round_trip(tmp_path, extra):
    d = build_balm_dict(seed=7)
    ds = read_mmgcn_pickle(_write(tmp_path, _as_tuple(d, extra)))
    assert list(ds.splits) == ["train", "test"]
    for split, vids in (("train", sorted(TRAIN)), ("test", sorted(TEST))):
        sp, exp = ds[split], expected_columns(d, vids)
        assert sp.sequence_ids == vids
        for m in ("audio", "text", "visual"):
            np.testing.assert_array_equal(sp.features[m], exp[m])
        np.testing.assert_array_equal(sp.labels, exp["labels"])
        np.testing.assert_array_equal(sp.speakers, exp["speakers"])
        np.testing.assert_array_equal(sp.lengths, exp["lengths"])
    assert ds.num_classes == 6 and ds.label_names == list(IEMOCAP_LABELS)
    assert ds.speaker_names == ["M", "F"] and ds.metadata["format"] == "mmgcn-pickle"


def test_one_hot_speakers(tmp_path):
    d = build_balm_dict(seed=8)
    t = list(_as_tuple(d))
    t[1] = {k: [[0.0, 1.0] if s == "F" else [1.0, 0.0] for s in v] for k, v in d["speaker"].items()}
    ds = read_mmgcn_pickle(_write(tmp_path, tuple(t)))
    np.testing.assert_array_equal(ds["train"].speakers, expected_columns(d, sorted(TRAIN))["speakers"])


def test_wrong_tuple_length(tmp_path):
    d = build_balm_dict(seed=9)
    path = _write(tmp_path, _as_tuple(d)[:8])
    with pytest.raises(DataError, match=r"IEMOCAP_features\.pkl.*tuple of 9 elements.*length 8"):
        read_mmgcn_pickle(path)


def test_errors_use_the_tuple_field_names(tmp_path):
    d = build_balm_dict(seed=10)
    d["text"]["d1"][0] = np.full(3, np.nan)
    path = _write(tmp_path, _as_tuple(d))
    with pytest.raises(DataError) as err:
        read_mmgcn_pickle(path)
    assert str(path) in str(err.value) and "videoText['d1']" in str(err.value) and "non-finite" in str(err.value)
