import numpy as np
import pytest

from balm.data import load
from balm.data.errors import DataError
from balm.data.loader import detect_format

h5py = pytest.importorskip("h5py", reason="h5py (extra 'formats') is not installed")

from balm.data.mmin_reader import read_mmin  # noqa: E402

DIMS = {"A": 6, "V": 4, "L": 5}
SETS = {"trn": 5, "val": 2, "tst": 3}


def _build(tmp_path, seed=0, *, one_hot=True, folds=(1,), int2name_2d=True):
    """An MMIN feature root: A/comparE.h5 (frames), V/denseface.h5 (frames), L/bert_large.h5
    (words, one utterance stored as a (d,) vector), target/<cv>/ as IEMOCAP stores it
    (one-hot labels, (N, 1) byte-string ids). Returns the root, ids, labels and raw arrays."""
    rng = np.random.default_rng(seed)
    root = tmp_path / "IEMOCAP_features_2021"
    names = {s: [f"Ses0{k}_{s}_{i:03d}" for i in range(n)] for k, (s, n) in enumerate(SETS.items(), 1)}
    raw = {m: {} for m in DIMS}
    for m, d in DIMS.items():
        (root / m).mkdir(parents=True)
        with h5py.File(root / m / {"A": "comparE.h5", "V": "denseface.h5", "L": "bert_large.h5"}[m], "w") as h:
            for j, u in enumerate(u for s in SETS for u in names[s]):
                x = rng.standard_normal((int(rng.integers(1, 6)), d)).astype(np.float32)
                if m == "L" and j == 0:
                    x = x[0]
                h[u] = x
                raw[m][u] = x
    labels = {}
    for cv in folds:
        for s, n in SETS.items():
            y = rng.integers(0, 4, n)
            labels[s] = y
            (root / "target" / str(cv)).mkdir(parents=True, exist_ok=True)
            np.save(root / "target" / str(cv) / f"{s}_label.npy", np.eye(4)[y] if one_hot else y)
            ids = np.array([u.encode() for u in names[s]])
            np.save(root / "target" / str(cv) / f"{s}_int2name.npy", ids[:, None] if int2name_2d else ids.astype(str))
    return root, names, labels, raw


def _mean(x):
    x = np.asarray(x, np.float64)
    return x.mean(axis=0) if x.ndim == 2 else x


def test_round_trip_pools_frames_per_utterance(tmp_path):
    root, names, labels, raw = _build(tmp_path)
    ds = read_mmin(root)
    assert ds.modalities == ("audio", "text", "visual")
    assert ds.task == "classification" and ds.num_classes == 4 and ds.label_names is None
    assert ds.metadata["cv"] == "1" and ds.metadata["feature_files"]["audio"] == "A/comparE.h5"
    for split, s in (("train", "trn"), ("dev", "val"), ("test", "tst")):
        sp = ds[split]
        assert sp.sequence_ids == names[s] and (sp.lengths == 1).all()
        np.testing.assert_array_equal(sp.labels, labels[s])
        for m, short in (("audio", "A"), ("text", "L"), ("visual", "V")):
            want = np.stack([_mean(raw[short][u]) for u in names[s]]).astype(np.float32)
            np.testing.assert_allclose(sp.features[m], want, rtol=1e-6, atol=1e-7)


def test_class_index_labels_string_ids_and_explicit_files(tmp_path):
    root, names, labels, raw = _build(tmp_path, seed=1, one_hot=False, int2name_2d=False)
    (root / "V" / "other.h5").write_bytes(b"")  # a second file: V needs naming
    with pytest.raises(DataError, match=r"2 feature files.*features="):
        read_mmin(root)
    ds = load(root, features={"audio": "A/comparE.h5", "visual": root / "V" / "denseface.h5"})
    assert detect_format(root) == "mmin"
    assert ds.modalities == ("audio", "visual")
    np.testing.assert_array_equal(ds["test"].labels, labels["tst"])
    np.testing.assert_allclose(ds["dev"].features["visual"][1], _mean(raw["V"][names["val"][1]]), rtol=1e-6)


def test_regression_scores(tmp_path):
    root, names, _, _ = _build(tmp_path, seed=2, one_hot=False)
    scores = {s: np.linspace(-3, 3, n) for s, n in SETS.items()}
    for s in SETS:
        np.save(root / "target" / "1" / f"{s}_label.npy", scores[s])
    ds = read_mmin(root)
    assert ds.task == "regression"
    np.testing.assert_allclose(ds["train"].labels, scores["trn"].astype(np.float32))


def test_folds_need_choosing(tmp_path):
    root, *_ = _build(tmp_path, seed=3, folds=(1, 2))
    with pytest.raises(DataError, match=r"2 cross-validation folds \['1', '2'\]; pass cv="):
        read_mmin(root)
    assert read_mmin(root, cv=2).metadata["cv"] == "2"
    with pytest.raises(DataError, match=r"no fold '7'"):
        read_mmin(root, cv="7")


def test_missing_utterance_names_file_and_id(tmp_path):
    root, names, _, _ = _build(tmp_path, seed=4)
    gone = names["tst"][2]
    with h5py.File(root / "V" / "denseface.h5", "a") as h:
        del h[gone]
    with pytest.raises(DataError) as err:
        read_mmin(root)
    msg = str(err.value)
    assert "denseface.h5" in msg and f"field {gone!r}" in msg and "no visual features" in msg


def test_wrong_width_names_file_and_id(tmp_path):
    root, names, _, _ = _build(tmp_path, seed=5)
    bad = names["val"][0]
    with h5py.File(root / "A" / "comparE.h5", "a") as h:
        del h[bad]
        h[bad] = np.ones((3, DIMS["A"] + 2), np.float32)
    with pytest.raises(DataError) as err:
        read_mmin(root)
    msg = str(err.value)
    assert "comparE.h5" in msg and f"field {bad!r}" in msg and "dimension 8 differs from the modality's dimension 6" in msg


def test_id_in_two_splits_is_refused(tmp_path):
    root, names, _, _ = _build(tmp_path, seed=6)
    ids = np.array([u.encode() for u in names["tst"][:2] + [names["trn"][0]]])[:, None]
    np.save(root / "target" / "1" / "tst_int2name.npy", ids)
    with pytest.raises(DataError) as err:
        read_mmin(root)
    assert f"{names['trn'][0]!r} is in both 'train' and 'test'" in str(err.value) and str(root) in str(err.value)


@pytest.mark.parametrize(
    "label, text",
    [
        (np.full((3, 4), 0.25), "must be one-hot rows"),
        (np.zeros(2, np.int64), "expected 3 labels (one per utterance id in int2name), got shape (2,)"),
    ],
)
def test_bad_labels(tmp_path, label, text):
    root, *_ = _build(tmp_path, seed=7)
    np.save(root / "target" / "1" / "tst_label.npy", label)
    with pytest.raises(DataError) as err:
        read_mmin(root)
    assert "tst_label.npy" in str(err.value) and "field 'label'" in str(err.value) and text in str(err.value)


def test_missing_split_file_and_groups(tmp_path):
    root, names, _, _ = _build(tmp_path, seed=8)
    (root / "target" / "1" / "trn_int2name.npy").unlink()
    with pytest.raises(DataError, match=r"trn_int2name\.npy: file not found"):
        read_mmin(root)
    root, names, _, _ = _build(tmp_path / "b", seed=8)
    with h5py.File(root / "L" / "bert_large.h5", "a") as h:
        del h[names["trn"][1]]
        h.create_group(names["trn"][1])["feat"] = np.zeros((2, 5))
    with pytest.raises(DataError, match=r"is an HDF5 group"):
        read_mmin(root)


def test_object_int2name_goes_through_the_safe_unpickler(tmp_path):
    root, names, labels, _ = _build(tmp_path, seed=9)
    np.save(root / "target" / "1" / "val_int2name.npy", np.array(names["val"], dtype=object), allow_pickle=True)
    assert read_mmin(root)["dev"].sequence_ids == names["val"]


def test_missing_h5py_names_package_and_extra(tmp_path, monkeypatch):
    import builtins

    root, *_ = _build(tmp_path, seed=10)
    real = builtins.__import__

    def no_h5py(name, *a, **k):
        if name == "h5py":
            raise ImportError("no h5py")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_h5py)
    with pytest.raises(DataError, match=r"needs the h5py package: pip install -e '\.\[formats\]' in the balm clone"):
        read_mmin(root)
