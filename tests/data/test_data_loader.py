import pickle

import numpy as np
import pytest

from balm.data import load
from balm.data.errors import DataError
from balm.data.loader import detect_format
from balm.data.native import save_dataset
from data_builders import build_balm_dict, tiny_dataset


def test_dispatch_by_extension_and_content(tmp_path):
    d = build_balm_dict(seed=1)
    (tmp_path / "a.pkl").write_bytes(pickle.dumps(d))
    tup = ({}, d["speaker"], d["label"], d["text"], d["audio"], d["visual"], d["sentence"], d["trainVid"], d["testVid"])
    (tmp_path / "b.pickle").write_bytes(pickle.dumps(tup, protocol=2))
    np.savez(tmp_path / "c.npz", audio=np.ones((3, 2)), labels=np.array([0, 1, 0]))
    save_dataset(tiny_dataset(), tmp_path / "native")
    assert detect_format(tmp_path / "a.pkl") == "balm-pickle"
    assert detect_format(tmp_path / "b.pickle") == "mmgcn-pickle"
    assert detect_format(tmp_path / "c.npz") == "npz"
    assert detect_format(tmp_path / "native") == "native"
    a, b = load(tmp_path / "a.pkl"), load(tmp_path / "b.pickle")
    np.testing.assert_array_equal(a["train"].features["text"], b["train"].features["text"])
    assert load(tmp_path / "c.npz")["train"].num_utterances == 3
    assert load(tmp_path / "native").name == "tiny"
    with pytest.raises(DataError, match=r"x\.bin.*extension"):
        (tmp_path / "x.bin").write_bytes(b"1")
        load(tmp_path / "x.bin")
    with pytest.raises(DataError, match="unknown format"):
        load(tmp_path / "a.pkl", format="csv")
    with pytest.raises(DataError, match="expected a dict"):
        load(tmp_path / "b.pickle", format="balm-pickle")


def test_synthetic_spec():
    ds = load("synthetic:iemocap", seed=0)
    assert ds["train"].num_utterances == 5810 and ds["test"].num_utterances == 1623
    with pytest.raises(DataError, match="unknown synthetic set"):
        load("synthetic:meld")
