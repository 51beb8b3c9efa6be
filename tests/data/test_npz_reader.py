import numpy as np
import pytest

from balm.data.errors import DataError
from balm.data.npz_reader import read_npz


def _arrays(seed=0, n=9):
    rng = np.random.default_rng(seed)
    return {
        "audio": rng.standard_normal((n, 4)),
        "text": rng.standard_normal((n, 3)).astype(np.float32),
        "labels": rng.integers(0, 3, n),
        "split": np.array(["train", "train", "test", "train", "dev", "train", "test", "dev", "train"][:n]),
        "dialogue": np.array(["a", "b", "t", "a", "v", "b", "t", "v", "a"][:n]),
        "speaker": np.array(["x", "y", "x", "y", "y", "x", "x", "x", "y"][:n]),
    }


def _write(tmp_path, arrays, name="feats.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_round_trip_groups_dialogues_in_file_order(tmp_path):
    a = _arrays()
    ds = read_npz(_write(tmp_path, a))
    assert list(ds.splits) == ["train", "dev", "test"]
    assert ds.modalities == ("audio", "text")
    tr = ds["train"]
    # dialogue a = rows 0, 3, 8; dialogue b = rows 1, 5 (a first: it appears first)
    rows = [0, 3, 8, 1, 5]
    assert tr.sequence_ids == ["a", "b"] and tr.lengths.tolist() == [3, 2]
    np.testing.assert_array_equal(tr.features["audio"], a["audio"][rows].astype(np.float32))
    np.testing.assert_array_equal(tr.features["text"], a["text"][rows])
    np.testing.assert_array_equal(tr.labels, a["labels"][rows])
    # speakers: names numbered in sorted order (x=0, y=1)
    np.testing.assert_array_equal(tr.speakers, [0, 1, 1, 1, 0])
    assert ds.speaker_names == ["x", "y"]
    assert ds["test"].lengths.tolist() == [2] and ds["dev"].sequence_ids == ["v"]
    assert ds.task == "classification" and ds.num_classes == int(a["labels"].max()) + 1


def test_without_dialogue_or_split_each_row_is_a_sequence(tmp_path):
    a = _arrays()
    del a["dialogue"], a["split"], a["speaker"]
    ds = read_npz(_write(tmp_path, a))
    assert list(ds.splits) == ["train"]
    tr = ds["train"]
    assert tr.lengths.tolist() == [1] * 9 and tr.sequence_ids == [str(i) for i in range(9)]
    np.testing.assert_array_equal(tr.labels, a["labels"])
    assert (tr.speakers == 0).all()


def test_task_from_dtype_and_override(tmp_path):
    a = _arrays()
    a["labels"] = np.linspace(-3, 3, 9)
    ds = read_npz(_write(tmp_path, a))
    assert ds.task == "regression" and ds["train"].labels.dtype == np.float32
    a["labels"] = np.array([0.0, 1, 2, 1, 0, 2, 1, 1, 0])
    ds = read_npz(_write(tmp_path, a), task="classification", num_classes=4)
    assert ds.task == "classification" and ds.num_classes == 4 and ds["train"].labels.dtype == np.int64
    a["labels"] = np.array([0.5, 1, 2, 1, 0, 2, 1, 1, 0])
    with pytest.raises(DataError, match="train.labels.*integer class indices"):
        read_npz(_write(tmp_path, a), task="classification")


@pytest.mark.parametrize(
    "change, field, words",
    [
        (lambda a: a.pop("labels"), "labels", "missing array"),
        (lambda a: a.update(split=np.array(["train"] * 8 + ["valid"])), "split", "'valid'"),
        (lambda a: a.update(audio=a["audio"][:8]), "audio", "8 rows"),
        (lambda a: a.update(text=np.zeros((9, 3, 2))), "text", "expected a modality array"),
        (lambda a: a["audio"].__setitem__((4, 1), np.nan), "dev.features[audio]", "non-finite"),
        (lambda a: a.update(speaker=np.zeros(8)), "speaker", "shape (9,)"),
        (lambda a: a.update(dialogue=np.array(["a"] * 9)), "sequence_ids", "in both"),
    ],
)
def test_bad_npz_refused(tmp_path, change, field, words):
    a = _arrays()
    change(a)
    path = _write(tmp_path, a)
    with pytest.raises(DataError) as err:
        read_npz(path)
    msg = str(err.value)
    assert str(path) in msg and field in msg and words in msg, msg


def test_object_arrays_and_garbage_refused(tmp_path):
    a = _arrays()
    a["dialogue"] = np.array([["a"], "b", "t", "a", "v", "b", "t", "v", "a"], dtype=object)
    path = _write(tmp_path, a)
    with pytest.raises(DataError, match="object array"):
        read_npz(path)
    bad = tmp_path / "junk.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="junk.npz.*not a readable"):
        read_npz(bad)
