from dataclasses import replace

import numpy as np
import pytest

from balm.data.errors import DataError
from balm.data.validation import validate_dataset
from data_builders import tiny_dataset


def test_features_become_float32_c_contiguous():
    ds = tiny_dataset(seed=1)
    x = np.asfortranarray(ds["train"].features["audio"].astype(np.float64))
    ds["train"].features["audio"] = x
    ds["train"].labels = ds["train"].labels.astype(np.int32)
    out = validate_dataset(ds, source="mem")
    got = out["train"].features["audio"]
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, x.astype(np.float32))
    assert out["train"].labels.dtype == np.int64


def _bad(kind):
    ds = tiny_dataset(seed=2)
    tr = ds["train"]
    if kind == "dims":
        ds["test"].features["text"] = np.zeros((ds["test"].num_utterances, 4), np.float32)
    elif kind == "rows":
        tr.features["visual"] = tr.features["visual"][:-1]
    elif kind == "lengths":
        tr.lengths = tr.lengths.copy()
        tr.lengths[0] += 1
    elif kind == "empty":
        tr.lengths = np.concatenate([[0], tr.lengths])
        tr.sequence_ids = ["e"] + tr.sequence_ids
    elif kind == "overlap":
        ds["test"].sequence_ids = ["train0"] + ds["test"].sequence_ids[1:]
    elif kind == "dup":
        tr.sequence_ids = [tr.sequence_ids[0]] * tr.num_sequences
    elif kind == "speakers":
        tr.speakers = tr.speakers + 5  # two speaker names
    elif kind == "label_names":
        ds.label_names = ["a", "b"]
    elif kind == "task":
        ds.task = "ranking"
    elif kind == "mask_info":
        ds.mask_info = {"rates": [0.2, 0.2]}
    elif kind == "partial_mask":
        tr.mask = np.ones((tr.num_utterances, 3), bool)
    elif kind == "modalities":
        ds.splits["test"] = replace(ds["test"], features={"audio": ds["test"].features["audio"],
                                                          "text": ds["test"].features["text"]})
    return ds


@pytest.mark.parametrize("kind, field, words", [
    ("dims", "test.features[text]", "dimension 4 differs from the modality's dimension 3"),
    ("rows", "train.features[visual]", "utterances, but the other modalities have"),
    ("lengths", "train.lengths", "sum to"),
    ("empty", "train.lengths", "'e' is empty"),
    ("overlap", "test.sequence_ids", "in both 'train' and 'test'"),
    ("dup", "train.sequence_ids", "more than once"),
    ("speakers", "train.speakers", "< 2"),
    ("label_names", "label_names", "2 label names for 3 classes"),
    ("task", "task", "'ranking'"),
    ("mask_info", "mask_info.rates", "expected 3 missing rates"),
    ("partial_mask", "mask", "every split has a mask or none"),
    ("modalities", "test.features", "differ from the dataset's"),
])
def test_refusals_name_source_and_field(kind, field, words):
    with pytest.raises(DataError) as err:
        validate_dataset(_bad(kind), source="data.bin")
    msg = str(err.value)
    assert msg.startswith("data.bin: ") and repr(field) in msg and words in msg, msg
