import os

import numpy as np
import pytest

import balm.masking
from balm.data import masks as dm
from balm.data.errors import DataError
from balm.data.native import load_dataset, save_dataset
from balm.masking import derive_seed, make_masks
from data_builders import tiny_dataset

RATES = (0.5, 0.7, 0.3)


def test_per_split_masks_use_independent_derived_seeds():
    ds = tiny_dataset(seed=1, num_train=30)
    out = dm.apply_masks(ds, RATES, seed=4)
    for k, sp in out.splits.items():
        expected = make_masks(sp.num_utterances, RATES, derive_seed(4, k), strategy="exact")
        np.testing.assert_array_equal(sp.mask, expected)
        assert not (~sp.mask).all(axis=1).any()
    info = out.mask_info
    assert info["rates"] == list(RATES) and info["seed"] == 4 and info["strategy"] == "exact"
    assert info["modalities"] == ["audio", "text", "visual"]
    for k, sp in out.splits.items():
        np.testing.assert_allclose(info["realised"][k], 1.0 - sp.mask.mean(axis=0))
    # the input is left unmasked
    assert all(sp.mask is None for sp in ds)


@pytest.mark.parametrize("rates, field, words", [((0.5, 0.5), "rates", "expected 3 missing rates"),
                                                 ((0.5, 1.0, 0.1), "rates[1]", "[0, 1)"),
                                                 ((0.5, -0.1, 0.1), "rates[1]", "[0, 1)"),
                                                 (("a", 0, 0), "rates[0]", "expected a missing rate")])
def test_bad_rates(rates, field, words):
    with pytest.raises(DataError) as err:
        dm.apply_masks(tiny_dataset(), rates, seed=0)
    assert f"field {field!r}" in str(err.value) and words in str(err.value)


def test_cache_reuses_the_same_masks(tmp_path, monkeypatch):
    ds = tiny_dataset(seed=2, num_train=20)
    first = dm.apply_masks(ds, RATES, seed=1, cache=tmp_path)
    files = os.listdir(tmp_path / "masks")
    assert len(files) == 1 and files[0].startswith("exact_seed1_r0.5-0.7-0.3_")

    def boom(*a, **k):
        raise AssertionError("masks were drawn again instead of read from the cache")

    monkeypatch.setattr(balm.masking, "make_masks", boom)
    again = dm.apply_masks(ds, RATES, seed=1, cache=tmp_path)
    for k in ds.splits:
        np.testing.assert_array_equal(first[k].mask, again[k].mask)
    assert again.mask_info["realised"] == first.mask_info["realised"]
    monkeypatch.undo()
    other = dm.apply_masks(ds, RATES, seed=2, cache=tmp_path)
    assert len(os.listdir(tmp_path / "masks")) == 2
    assert any((other[k].mask != first[k].mask).any() for k in ds.splits)


def test_cache_is_keyed_by_the_sequences(tmp_path):
    a, b = tiny_dataset(seed=3), tiny_dataset(seed=3, num_train=11)
    assert dm.split_fingerprint(a) != dm.split_fingerprint(b)
    ma = dm.apply_masks(a, RATES, seed=0, cache=tmp_path)
    mb = dm.apply_masks(b, RATES, seed=0, cache=tmp_path)
    assert len(os.listdir(tmp_path / "masks")) == 2
    assert mb["train"].mask.shape[0] == b["train"].num_utterances != ma["train"].mask.shape[0]
    # a damaged cache file is reported, not silently redrawn
    path = tmp_path / "masks" / (dm.mask_key(RATES, 0, "exact", dm.split_fingerprint(a)) + ".npz")
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"corrupted mask file"):
        dm.apply_masks(a, RATES, seed=0, cache=tmp_path)


def test_user_masks(tmp_path):
    ds = tiny_dataset(seed=4)
    rng = np.random.default_rng(0)
    masks = {k: rng.random((sp.num_utterances, 3)) < 0.7 for k, sp in ds.splits.items()}
    for m in masks.values():
        m[~m.any(axis=1), 2] = True
    out = dm.with_masks(ds, masks)
    assert out.mask_info["strategy"] == "user"
    np.testing.assert_allclose(out.mask_info["realised"]["test"], 1 - masks["test"].mean(axis=0))
    bad = {k: v.copy() for k, v in masks.items()}
    bad["test"][1] = False
    with pytest.raises(DataError, match=r"'mask\[test\]'.*every modality missing.*row 1"):
        dm.with_masks(ds, bad)
    with pytest.raises(DataError, match=r"no mask for split\(s\) \['test'\]"):
        dm.with_masks(ds, {"train": masks["train"]})
    with pytest.raises(DataError, match=r"expected shape"):
        dm.with_masks(ds, {k: v[:, :2] for k, v in masks.items()})
    # from a file, and stored with the dataset in the native format
    np.savez(tmp_path / "m.npz", **masks)
    got = dm.read_mask_file(tmp_path / "m.npz", ds)
    save_dataset(got, tmp_path / "ds")
    back = load_dataset(tmp_path / "ds")
    for k in ds.splits:
        np.testing.assert_array_equal(back[k].mask, masks[k])
    assert back.mask_info == got.mask_info
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(DataError, match=r"bad\.npz.*mask\[test\]"):
        dm.read_mask_file(tmp_path / "bad.npz", ds)
