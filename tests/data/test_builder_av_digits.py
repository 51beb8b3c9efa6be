"""The AV-digits builder on the real FSDD recordings (skipped when ../shared/data is absent).

The full build (3000 openSMILE extractions, about a minute on one core) runs once; the pairing
of all 3000 recordings is also checked without features, and features on a small subset.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from balm.cli.main import main
from balm.data.builders import av_digits
from balm.data.errors import DataError
from balm.data.native import load_dataset
from real_data import real_folder

pytest.importorskip("opensmile")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def fsdd():
    return real_folder("fsdd")


def _index(name: str) -> int:
    return int(re.fullmatch(r"\d_[a-z]+_(\d+)\.wav", name).group(1))


def test_plan_pairs_all_recordings_with_the_official_test_split(fsdd):
    from sklearn.datasets import load_digits

    p = av_digits.plan(fsdd, seed=0)
    digits = load_digits().target
    files = {k: p.files[k] for k in ("train", "dev", "test")}
    assert sum(len(v) for v in files.values()) == 3000
    everything = set().union(*files.values())
    assert everything == set(os.listdir(fsdd / "recordings"))
    assert {n for n in everything if _index(n) <= 4} == set(files["test"]) and len(files["test"]) == 300
    assert all(_index(n) >= 5 for n in files["train"] + files["dev"])
    assert len(files["dev"]) == 270  # floor(0.1 * 270) per digit
    for k in files:  # image digit = spoken digit = label
        spoken = np.array([int(n[0]) for n in files[k]])
        np.testing.assert_array_equal(digits[p.images[k]], spoken)
        np.testing.assert_array_equal(p.digits[k], spoken)
    imgs = {k: set(p.images[k].tolist()) for k in files}
    assert not imgs["train"] & imgs["test"] and not imgs["train"] & imgs["dev"] and not imgs["dev"] & imgs["test"]
    # each image is used floor or ceil of recordings / images times within its split
    for k in files:
        for c in range(10):
            used = np.bincount(p.images[k][p.digits[k] == c])
            used = used[used > 0]
            assert used.max() - used.min() <= 1
    q = av_digits.plan(fsdd, seed=0)
    assert all(np.array_equal(p.images[k], q.images[k]) and p.files[k] == q.files[k] for k in files)
    r = av_digits.plan(fsdd, seed=1)
    assert r.files["test"] == p.files["test"] and r.files["dev"] != p.files["dev"]
    assert not np.array_equal(r.images["test"], p.images["test"])


@pytest.fixture(scope="module")
def small(fsdd, tmp_path_factory):
    root = tmp_path_factory.mktemp("avd")
    out = root / "a"
    args = ["data", "build", "av-digits", "--source", str(fsdd), "--limit", "2", "--cache", str(root / "cache"),
            "--quiet"]
    assert main(args + ["--out", str(out)]) == 0
    return root, args


def test_subset_build_dims_labels_and_split(small):
    root, _ = small
    ds = load_dataset(root / "a")
    assert ds.dims() == {"audio": 1582, "visual": 64} and ds.num_classes == 10
    assert [ds[k].num_sequences for k in ("train", "dev", "test")] == [110, 10, 120]  # 2 per digit x speaker each
    for k in ("train", "dev", "test"):
        names = [s.split("+")[0] + ".wav" for s in ds[k].sequence_ids]
        assert all((_index(n) <= 4) == (k == "test") for n in names)
        np.testing.assert_array_equal(ds[k].labels, [int(n[0]) for n in names])
        assert (ds[k].lengths == 1).all()


def test_same_seed_same_bytes_and_the_cache_is_used(small, monkeypatch):
    import opensmile

    root, args = small
    calls = []
    real = opensmile.Smile.process_file
    monkeypatch.setattr(opensmile.Smile, "process_file", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    assert main(args + ["--out", str(root / "b")]) == 0
    assert calls == []  # every vector came from the cache
    no_cache = [a for a in args if a not in ("--cache", str(root / "cache"))] + ["--no-cache"]
    assert main(no_cache + ["--out", str(root / "c")]) == 0
    assert len(calls) == 240  # recomputed without the cache, to the same bytes
    for other in ("b", "c"):
        for f in ("meta.json", "train.npz", "dev.npz", "test.npz"):
            assert (root / "a" / f).read_bytes() == (root / other / f).read_bytes()


def test_audio_rows_are_opensmile_is10_of_their_recording(fsdd, small):
    import opensmile

    root, _ = small
    ds = av_digits.build(fsdd, limit=1, cache=root / "cache", standardize=False, progress=False)
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.IS10, feature_level=opensmile.FeatureLevel.Functionals)
    sp = ds["test"]
    for j in (0, 17, 59):
        name = sp.sequence_ids[j].split("+")[0] + ".wav"
        ref = smile.process_file(str(fsdd / "recordings" / name)).to_numpy(np.float32)[0]
        np.testing.assert_array_equal(sp.features["audio"][j], ref)
        img = int(sp.sequence_ids[j].split("+img")[1])
        from sklearn.datasets import load_digits

        np.testing.assert_array_equal(sp.features["visual"][j], (load_digits().data[img] / 16).astype(np.float32))


def _linked_copy(fsdd, dst, sums=True):
    (dst / "recordings").mkdir(parents=True)
    for n in os.listdir(fsdd / "recordings"):
        os.symlink(fsdd / "recordings" / n, dst / "recordings" / n)
    if sums:
        os.symlink(fsdd / "SHA256SUMS", dst / "SHA256SUMS")


def test_changed_recording_is_named_and_nothing_written(fsdd, tmp_path, capsys):
    src = tmp_path / "src"
    _linked_copy(fsdd, src)
    target = src / "recordings" / "3_theo_17.wav"
    data = bytearray(target.read_bytes())
    target.unlink()
    data[100] ^= 0x01
    target.write_bytes(bytes(data))
    work = tmp_path / "work"
    work.mkdir()
    assert main(["data", "build", "av-digits", "--source", str(src), "--out", str(work / "ds"), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "3_theo_17.wav" in err and "SHA-256" in err
    assert os.listdir(work) == []
    os.unlink(src / "SHA256SUMS")  # without the release's sums the set is still refused
    with pytest.raises(DataError, match="differ from the pinned release"):
        av_digits.plan(src)


def test_missing_and_foreign_recordings(fsdd, tmp_path):
    src = tmp_path / "src"
    _linked_copy(fsdd, src)
    os.unlink(src / "recordings" / "0_george_0.wav")
    with pytest.raises(DataError, match="0_george_0.wav: recording of the release is missing"):
        av_digits.plan(src)
    (src / "recordings" / "notes.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"notes\.wav: file name is not"):
        av_digits.plan(src)


def test_full_build(fsdd, tmp_path):
    assert main(["data", "build", "av-digits", "--source", str(fsdd), "--out", str(tmp_path / "ds"),
                 "--cache", str(tmp_path / "cache"), "--quiet"]) == 0
    ds = load_dataset(tmp_path / "ds")
    assert sum(sp.num_sequences for sp in ds) == 3000 and ds.dims()["audio"] == 1582
    assert ds["test"].num_sequences == 300
    # the same seed, rebuilt from the cache, gives the same files byte for byte
    assert main(["data", "build", "av-digits", "--source", str(fsdd), "--out", str(tmp_path / "again"),
                 "--cache", str(tmp_path / "cache"), "--quiet"]) == 0
    first = sorted(p.relative_to(tmp_path / "ds") for p in (tmp_path / "ds").rglob("*") if p.is_file())
    assert first == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())
    for rel in first:
        assert (tmp_path / "ds" / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel
