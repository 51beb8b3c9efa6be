import pickle

import numpy as np
import pytest

from balm.data.balm_pickle import read_balm_pickle
from balm.data.errors import DataError
from balm.data.label_space import IEMOCAP_LABELS
from data_builders import TEST, TRAIN, build_balm_dict, expected_columns


def _write(tmp_path, obj, name="iemocap.pkl", protocol=4):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def _check_split(sp, d, vids):
    exp = expected_columns(d, vids)
    assert sp.modalities == ("audio", "text", "visual")
    for m in ("audio", "text", "visual"):
        assert sp.features[m].dtype == np.float32 and sp.features[m].flags.c_contiguous
        np.testing.assert_array_equal(sp.features[m], exp[m])
    np.testing.assert_array_equal(sp.labels, exp["labels"])
    np.testing.assert_array_equal(sp.speakers, exp["speakers"])
    np.testing.assert_array_equal(sp.lengths, exp["lengths"])
    assert sp.sequence_ids == vids


@pytest.mark.parametrize("protocol", [2, 4])
def test_iemocap_style_round_trip(tmp_path, protocol):
    d = build_balm_dict(seed=1)
    ds = read_balm_pickle(_write(tmp_path, d, protocol=protocol))
    assert list(ds.splits) == ["train", "test"]
    _check_split(ds["train"], d, list(TRAIN))
    _check_split(ds["test"], d, list(TEST))
    assert ds.task == "classification"
    assert ds["train"].labels.dtype == np.int64
    # the file name says IEMOCAP: the community's six classes in their index order
    assert ds.num_classes == 6 and ds.label_names == list(IEMOCAP_LABELS)
    assert ds.speaker_names == ["M", "F"]
    assert ds.dims() == {"audio": 4, "text": 3, "visual": 2}
    assert ds.metadata["format"] == "balm-pickle"


def test_mosei_style_float_labels_are_regression_with_dev(tmp_path):
    d = build_balm_dict(seed=2, with_dev=True, regression=True)
    ds = read_balm_pickle(_write(tmp_path, d, name="mosei.pkl"))
    assert list(ds.splits) == ["train", "dev", "test"]
    assert ds.task == "regression" and ds.num_classes is None and ds.label_names is None
    assert ds["dev"].labels.dtype == np.float32
    np.testing.assert_allclose(ds["dev"].labels, np.asarray(d["label"]["v1"], dtype=np.float32))
    _check_split(ds["dev"], {**d, "label": {k: np.asarray(v, np.float32) for k, v in d["label"].items()}}, ["v1"])


def test_label_space_rules(tmp_path):
    d = build_balm_dict(seed=3)
    top = max(max(v) for v in d["label"].values())
    # a name without "iemocap": classes = max label + 1, no names
    ds = read_balm_pickle(_write(tmp_path, d, name="other.pkl"))
    assert ds.num_classes == top + 1 and ds.label_names is None
    names = ["a", "b", "c", "d", "e", "f", "g"]
    ds = read_balm_pickle(_write(tmp_path, d, name="other.pkl"), label_names=names)
    assert ds.num_classes == 7 and ds.label_names == names
    # a float override to regression
    ds = read_balm_pickle(_write(tmp_path, d, name="other.pkl"), task="regression")
    assert ds.task == "regression" and ds["train"].labels.dtype == np.float32


def test_set_ids_are_sorted_and_one_hot_speakers(tmp_path):
    d = build_balm_dict(seed=4)
    d["trainVid"] = {"d3", "d1", "d2"}
    d["speaker"] = {k: [[1, 0] if s == "M" else [0, 1] for s in v] for k, v in d["speaker"].items()}
    ds = read_balm_pickle(_write(tmp_path, d))
    assert ds["train"].sequence_ids == ["d1", "d2", "d3"]
    exp = [0 if s == "M" else 1 for v in ("d1", "d2", "d3") for s in build_balm_dict(seed=4)["speaker"][v]]
    np.testing.assert_array_equal(ds["train"].speakers, exp)
    assert ds.speaker_names is None


def _corrupt(kind):
    d = build_balm_dict(seed=5)
    if kind == "missing":
        del d["label"]
    elif kind == "dim":
        d["text"]["d2"][1] = np.zeros(5)
    elif kind == "dim_dialogue":
        d["audio"]["d3"] = np.zeros((4, 7))
    elif kind == "nan":
        d["visual"]["d1"][2][1] = float("nan")
    elif kind == "inf":
        d["audio"]["t1"][0, 0] = np.inf
    elif kind == "range":
        d["label"]["d2"][0] = 6
    elif kind == "negative":
        d["label"]["d1"][0] = -1
    elif kind == "type":
        d["label"]["d1"] = ["hap", "sad", "neu"]
    elif kind == "empty":
        for k in ("text", "audio", "visual", "label", "speaker"):
            d[k]["d2"] = []
    elif kind == "length":
        d["audio"]["d1"] = d["audio"]["d1"][:2]
    elif kind == "speaker_length":
        d["speaker"]["d3"] = d["speaker"]["d3"][:1]
    elif kind == "overlap":
        d["testVid"] = ["t1", "d2"]
    elif kind == "absent_dialogue":
        del d["visual"]["d3"]
    return d


@pytest.mark.parametrize(
    "kind, field, words",
    [
        ("missing", "label", "missing key"),
        ("dim", "text['d2']", "dimension 5"),
        ("dim_dialogue", "audio['d3']", "dimension 7 differs"),
        ("nan", "visual['d1']", "non-finite"),
        ("inf", "audio['t1']", "non-finite"),
        ("range", "train.labels", "out of range"),
        ("negative", "train.labels", "out of range"),
        ("type", "labels", "integers (classification) or floats"),
        ("empty", "label['d2']", "empty"),
        ("length", "audio['d1']", "2 utterances"),
        ("speaker_length", "speaker['d3']", "1 speakers"),
        ("overlap", "test.sequence_ids", "in both 'train' and 'test'"),
        ("absent_dialogue", "visual", "no entry for dialogue 'd3'"),
    ],
)
def test_bad_input_is_refused_with_file_and_field(tmp_path, kind, field, words):
    path = _write(tmp_path, _corrupt(kind))
    kwargs = {"label_names": list(IEMOCAP_LABELS)} if kind == "range" else {}
    with pytest.raises(DataError) as err:
        read_balm_pickle(path, **kwargs)
    msg = str(err.value)
    assert str(path) in msg, msg
    assert f"'{field}" in msg or repr(field) in msg, msg
    assert words in msg, msg


def test_non_dict_is_refused(tmp_path):
    with pytest.raises(DataError, match="expected a dict"):
        read_balm_pickle(_write(tmp_path, [1, 2]))
