import json
import os

import numpy as np
import pytest

import balm.data.native as native
from balm.data.errors import DataError
from balm.data.native import load_dataset, save_dataset
from data_builders import tiny_dataset


def _assert_same(a, b):
    assert (a.name, a.task, a.num_classes, a.label_names, a.speaker_names) == (
        b.name, b.task, b.num_classes, b.label_names, b.speaker_names)
    assert a.mask_info == b.mask_info and a.metadata == b.metadata
    assert list(a.splits) == list(b.splits)
    for k in a.splits:
        x, y = a[k], b[k]
        assert x.modalities == y.modalities and x.sequence_ids == y.sequence_ids
        for m in x.modalities:
            assert y.features[m].dtype == np.float32
            np.testing.assert_array_equal(x.features[m], y.features[m])
        for f in ("labels", "speakers", "lengths"):
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f))
            assert getattr(x, f).dtype == getattr(y, f).dtype
        if x.mask is None:
            assert y.mask is None
        else:
            assert y.mask.dtype == bool
            np.testing.assert_array_equal(x.mask, y.mask)


@pytest.mark.parametrize("with_mask", [False, True])
def test_round_trip_is_exact(tmp_path, with_mask):
    ds = tiny_dataset(seed=1, with_mask=with_mask)
    if with_mask:
        ds.mask_info = {"rates": [0.4, 0.4, 0.4], "seed": 3, "strategy": "paper", "realised": {"train": [0.1, 0.2, 0.3]}}
    out = tmp_path / "ds"
    save_dataset(ds, out)
    assert sorted(os.listdir(out)) == ["meta.json", "test.npz", "train.npz"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["modalities"] == [{"name": "audio", "dim": 4}, {"name": "text", "dim": 3}, {"name": "visual", "dim": 2}]
    assert meta["splits"]["train"]["utterances"] == ds["train"].num_utterances
    with np.load(out / "train.npz", allow_pickle=False) as z:
        assert z["sequence_ids"].dtype.kind == "U"
        assert ("mask" in z.files) == with_mask
    _assert_same(ds, load_dataset(out))


def test_overwrite_is_atomic_on_failure(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    first = tiny_dataset(seed=2)
    save_dataset(first, out)
    calls = {"n": 0}
    real = np.savez

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(native.np, "savez", failing)
    with pytest.raises(OSError, match="disk full"):
        save_dataset(tiny_dataset(seed=3), out)
    monkeypatch.undo()
    _assert_same(first, load_dataset(out))
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no temporary directory left behind
    # a successful overwrite replaces it completely
    second = tiny_dataset(seed=4, num_train=5)
    save_dataset(second, out)
    _assert_same(second, load_dataset(out))
    assert sorted(os.listdir(tmp_path)) == ["ds"]


def test_invalid_dataset_writes_nothing(tmp_path):
    ds = tiny_dataset(seed=5)
    ds["train"].features["audio"][0, 0] = np.nan
    with pytest.raises(DataError, match="train.features\\[audio\\].*non-finite"):
        save_dataset(ds, tmp_path / "ds")
    assert os.listdir(tmp_path) == []


def test_refuses_to_replace_a_foreign_directory(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a balm dataset"):
        save_dataset(tiny_dataset(), tmp_path / "ds")
    assert (tmp_path / "ds" / "notes.txt").read_text() == "keep me"


def _saved(tmp_path):
    out = tmp_path / "ds"
    save_dataset(tiny_dataset(seed=6), out)
    return out


def test_missing_or_corrupted_files(tmp_path):
    out = _saved(tmp_path)
    (out / "test.npz").unlink()
    with pytest.raises(DataError, match=r"test\.npz.*listed in meta.json is missing"):
        load_dataset(out)

    out = _saved(tmp_path)
    data = (out / "train.npz").read_bytes()
    (out / "train.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"train\.npz.*corrupted split file"):
        load_dataset(out)

    out = _saved(tmp_path)
    (out / "meta.json").write_text("{ not json")
    with pytest.raises(DataError, match=r"meta\.json.*corrupted"):
        load_dataset(out)

    out = _saved(tmp_path)
    (out / "meta.json").unlink()
    with pytest.raises(DataError, match="meta.json is missing"):
        load_dataset(out)


def test_content_checks_on_load(tmp_path):
    out = _saved(tmp_path)
    meta = json.loads((out / "meta.json").read_text())
    meta["modalities"][1]["dim"] = 5
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"train\.npz.*'features_1'.*dimension 5"):
        load_dataset(out)

    out = _saved(tmp_path)
    with np.load(out / "train.npz") as z:
        arrays = dict(z)
    arrays["labels"][0] = 3  # num_classes is 3
    np.savez(out / "train.npz", **arrays)
    with pytest.raises(DataError, match="train.labels.*out of range"):
        load_dataset(out)

    out = _saved(tmp_path)
    with np.load(out / "test.npz") as z:
        arrays = dict(z)
    arrays["mask"] = np.zeros((len(arrays["labels"]), 3), dtype=bool)
    np.savez(out / "test.npz", **arrays)
    with pytest.raises(DataError, match="every modality missing"):
        load_dataset(out)

    out = _saved(tmp_path)
    meta = json.loads((out / "meta.json").read_text())
    meta["version"] = 99
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="'version'.*unsupported"):
        load_dataset(out)
