import pickle
from pathlib import Path

import numpy as np
import pytest

from balm.data import load
from balm.data.errors import DataError
from balm.data.gcnet_reader import IEMOCAP4_LABELS, read_gcnet
from balm.data.loader import detect_format
from balm.data.safe_pickle import safe_load

DIMS = {"audio": 5, "text": 4, "visual": 3}
VIDEOS = {"v1": 3, "v2": 2, "v3": 2, "v4": 1, "v5": 2}
SPLITS = {"trainVid": {"v1", "v2"}, "valVid": {"v3"}, "testVid": {"v4", "v5"}}
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _mosi_like(tmp_path, seed=0):
    """A 7-element label list and three feature folders in the CMU-MOSI layout of GCNet.

    audio: (d,) vectors; text: (1, d); visual: a folder of per-face (d,) files for most
    utterances, a (T, d) frame array for one. Returns paths and the expected vectors.
    """
    rng = np.random.default_rng(seed)
    ids = {v: [f"{v}_{i + 1}" for i in range(n)] for v, n in VIDEOS.items()}
    labels = {v: [np.float64(x) for x in np.round(rng.uniform(-3, 3, n), 2)] for v, n in VIDEOS.items()}
    obj = [ids, labels, {v: [""] * n for v, n in VIDEOS.items()}, {v: ["w"] * n for v, n in VIDEOS.items()},
           SPLITS["trainVid"], SPLITS["valVid"], SPLITS["testVid"]]
    roots = {m: tmp_path / f"{m}_feat" for m in DIMS}
    for r in roots.values():
        r.mkdir()
    expected = {m: {} for m in DIMS}
    for v, uids in ids.items():
        for k, u in enumerate(uids):
            a = rng.standard_normal(DIMS["audio"])
            np.save(roots["audio"] / f"{u}.npy", a)
            expected["audio"][u] = a
            t = rng.standard_normal((1, DIMS["text"])).astype(np.float32)
            np.save(roots["text"] / f"{u}.npy", t)
            expected["text"][u] = t[0]
            if k == 0:  # frames in one file
                f = rng.standard_normal((4, DIMS["visual"]))
                np.save(roots["visual"] / f"{u}.npy", f)
                expected["visual"][u] = f.mean(axis=0)
            else:  # one file per face
                (roots["visual"] / u).mkdir()
                faces = [rng.standard_normal(DIMS["visual"]) for _ in range(k + 1)]
                for j, face in enumerate(faces):
                    np.save(roots["visual"] / u / f"{j:03d}.npy", face)
                expected["visual"][u] = np.mean(faces, axis=0)
    path = tmp_path / "CMUMOSI_features_raw_2way.pkl"
    path.write_bytes(pickle.dumps(obj))
    return path, {m: str(r) for m, r in roots.items()}, obj, expected


def test_mosi_layout_round_trip(tmp_path):
    path, roots, obj, exp = _mosi_like(tmp_path)
    ds = read_gcnet(path, roots)
    assert ds.task == "regression" and ds.modalities == ("audio", "text", "visual")
    assert list(ds.splits) == ["train", "dev", "test"]
    for split, key in (("train", "trainVid"), ("dev", "valVid"), ("test", "testVid")):
        sp = ds[split]
        vids = sorted(SPLITS[key])  # sets are read in sorted order
        assert sp.sequence_ids == vids
        assert sp.lengths.tolist() == [VIDEOS[v] for v in vids]
        uids = [u for v in vids for u in obj[0][v]]
        for m in DIMS:
            want = np.stack([exp[m][u] for u in uids]).astype(np.float32)
            np.testing.assert_allclose(sp.features[m], want, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(sp.labels, np.array([x for v in vids for x in obj[1][v]], np.float32))
        assert (sp.speakers == 0).all()
    assert ds.speaker_names is None and ds.metadata["format"] == "gcnet"
    assert ds.metadata["empty_features"] == {"audio": 0, "text": 0, "visual": 0}


def test_detected_and_loaded_through_load(tmp_path):
    path, roots, _, _ = _mosi_like(tmp_path, seed=1)
    assert detect_format(path) == "gcnet"
    ds = load(path, features={"text": roots["text"]})
    assert ds.modalities == ("text",) and ds["train"].num_utterances == 5
    with pytest.raises(DataError, match=r"features.*one folder per modality"):
        load(path)
    with pytest.raises(DataError, match=r"options \['cv'\] do not apply to format 'gcnet'"):
        load(path, features=roots, cv=1)


def test_iemocap_layout_picks_the_speakers_faces(tmp_path):
    """6-element IEMOCAP list: no dev split, 'F'/'M' speakers, faces stored as compress_F / compress_M."""
    rng = np.random.default_rng(3)
    ids = {"Ses01F_a": ["Ses01F_a_F000", "Ses01F_a_M000"], "Ses05M_b": ["Ses05M_b_M000"]}
    spk = {"Ses01F_a": ["F", "M"], "Ses05M_b": ["M"]}
    labels = {"Ses01F_a": [0, 3], "Ses05M_b": [2]}
    obj = [ids, labels, spk, {k: [""] * len(v) for k, v in ids.items()}, {"Ses01F_a"}, {"Ses05M_b"}]
    vis = tmp_path / "manet_UTT"
    vis.mkdir()
    want = {}
    for v, uids in ids.items():
        for u, s in zip(uids, spk[v]):
            (vis / u).mkdir()
            f, m = rng.standard_normal(3), rng.standard_normal(3)
            np.save(vis / u / "compress_F.npy", f)
            np.save(vis / u / "compress_M.npy", m)
            want[u] = f if s == "F" else m
    path = tmp_path / "IEMOCAP_features_raw_4way.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    ds = read_gcnet(path, {"visual": vis})
    assert list(ds.splits) == ["train", "test"] and ds.task == "classification"
    assert ds.label_names == list(IEMOCAP4_LABELS) and ds.speaker_names == ["M", "F"]
    np.testing.assert_allclose(ds["train"].features["visual"], np.stack([want[u] for u in ids["Ses01F_a"]]), rtol=1e-6)
    np.testing.assert_allclose(ds["test"].features["visual"], want["Ses05M_b_M000"][None], rtol=1e-6)
    np.testing.assert_array_equal(ds["train"].speakers, [1, 0])  # F=1, M=0 (balm's speaker order)
    np.testing.assert_array_equal(ds["train"].labels, [0, 3])
    # a face whose file name names neither speaker cannot be assigned
    np.save(vis / "Ses05M_b_M000" / "face.npy", np.zeros(3))
    with pytest.raises(DataError) as err:
        read_gcnet(path, {"visual": vis})
    assert "face.npy" in str(err.value) and "field 'visual'" in str(err.value)


def test_utterance_without_a_face_gets_zeros(tmp_path):
    path, roots, obj, _ = _mosi_like(tmp_path, seed=4)
    u = obj[0]["v2"][1]
    for f in (Path(roots["visual"]) / u).iterdir():
        f.unlink()
    ds = read_gcnet(path, roots)
    sp = ds["train"]
    row = sp.offsets[1] + 1  # v2 is the second training video
    np.testing.assert_array_equal(sp.features["visual"][row], np.zeros(3, np.float32))
    assert ds.metadata["empty_features"]["visual"] == 1


def test_missing_feature_file_names_file_and_modality(tmp_path):
    path, roots, obj, _ = _mosi_like(tmp_path, seed=5)
    u = obj[0]["v4"][0]
    (Path(roots["audio"]) / f"{u}.npy").unlink()
    with pytest.raises(DataError) as err:
        read_gcnet(path, roots)
    msg = str(err.value)
    assert f"{u}.npy" in msg and "field 'audio'" in msg and "no feature for utterance" in msg


def test_wrong_width_names_file_and_modality(tmp_path):
    path, roots, obj, _ = _mosi_like(tmp_path, seed=6)
    u = obj[0]["v5"][1]
    np.save(Path(roots["text"]) / f"{u}.npy", np.ones(DIMS["text"] + 1))
    with pytest.raises(DataError) as err:
        read_gcnet(path, roots)
    msg = str(err.value)
    assert f"{u}.npy" in msg and "field 'text'" in msg and "dimension 5 differs from the modality's dimension 4" in msg


def test_video_in_two_splits_is_refused(tmp_path):
    path, roots, obj, _ = _mosi_like(tmp_path, seed=7)
    obj[6] = {"v4", "v5", "v1"}
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataError) as err:
        read_gcnet(path, roots)
    assert str(path) in str(err.value) and "'v1' is in both 'train' and 'test'" in str(err.value)
    assert "test.sequence_ids" in str(err.value)


@pytest.mark.parametrize(
    "edit, field, text",
    [
        (lambda o: o.__setitem__(1, {k: v for k, v in o[1].items() if k != "v3"}), "videoLabels", "no entry for video 'v3'"),
        (lambda o: o[1].__setitem__("v1", o[1]["v1"][:2]), "videoLabels['v1']", "2 entries, but videoIDs['v1'] lists 3"),
        (lambda o: o.__delitem__(slice(4, 6)), None, "expected a list/tuple of 7 elements"),
    ],
)
def test_label_pickle_errors(tmp_path, edit, field, text):
    path, roots, obj, _ = _mosi_like(tmp_path, seed=8)
    edit(obj)
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataError) as err:
        read_gcnet(path, roots)
    assert text in str(err.value) and str(path) in str(err.value)
    if field:
        assert f"field {field!r}" in str(err.value)


def test_real_cmu_mosi_label_pickle_structure():
    path = SHARED / "cmu-mosi" / "CMUMOSI_features_raw_2way.pkl"
    if not path.exists():
        reason = f"real data not found at {SHARED} (../shared/data from the repository root)"
        print(reason)
        pytest.skip(reason)
    from balm.data.gcnet_reader import parse_label_pickle

    f = parse_label_pickle(safe_load(path), source=str(path))
    assert [len(f[k]) for k in ("trainVid", "valVid", "testVid")] == [52, 10, 31]
    assert set(f["trainVid"]).isdisjoint(f["valVid"]) and set(f["trainVid"]).isdisjoint(f["testVid"])
    vids = set(f["trainVid"]) | set(f["valVid"]) | set(f["testVid"])
    assert vids == set(f["videoIDs"]) and len(vids) == 93
    n = sum(len(f["videoIDs"][v]) for v in vids)
    assert n == 2199
    for v in vids:
        assert len(f["videoLabels"][v]) == len(f["videoIDs"][v]) == len(f["videoSpeakers"][v])
        assert all(u.startswith(v + "_") for u in f["videoIDs"][v])
    scores = np.array([float(x) for v in vids for x in f["videoLabels"][v]])
    assert scores.min() >= -3 and scores.max() <= 3
    assert {s for v in vids for s in f["videoSpeakers"][v]} == {""}
    assert detect_format(path) == "gcnet"


def test_real_cmu_mosi_through_feature_folders(tmp_path):
    """The real label pickle with per-utterance .npy files written from the real MOSI CSVs."""
    import csv

    src = SHARED / "cmu-mosi"
    if not src.exists():
        reason = f"real data not found at {SHARED} (../shared/data from the repository root)"
        print(reason)
        pytest.skip(reason)

    def rows(name):
        with open(src / name, newline="") as f:
            return list(csv.reader(f))

    uid_of_row = [r[0] for r in rows("transcripts.csv")]
    roots = {"audio": tmp_path / "audio", "visual": tmp_path / "video"}
    for r in roots.values():
        r.mkdir()
    written, csv_label = {}, {}
    for part in ("train", "test"):
        uids = [uid_of_row[int(float(r[0]))] for r in rows(f"text_{part}.csv")]
        for m, prefix in (("audio", "audio"), ("visual", "video")):
            for uid, r in zip(uids, rows(f"{prefix}_{part}0.csv")):
                x = np.array([float(v) for v in r[:-1]])
                np.save(roots[m] / f"{uid}.npy", x)
                written[(m, uid)] = x
                csv_label[uid] = int(float(r[-1]))
    ds = read_gcnet(src / "CMUMOSI_features_raw_2way.pkl", roots)
    assert ds.task == "regression" and ds.dims() == {"audio": 73, "visual": 100}
    assert [ds[s].num_sequences for s in ("train", "dev", "test")] == [52, 10, 31]
    assert sum(ds[s].num_utterances for s in ds.splits) == 2199 == len(csv_label)
    obj = safe_load(src / "CMUMOSI_features_raw_2way.pkl")
    for s in ds.splits:
        sp = ds[s]
        uids = [u for v in sp.sequence_ids for u in obj[0][v]]
        for m in roots:
            np.testing.assert_array_equal(sp.features[m], np.stack([written[(m, u)] for u in uids]).astype(np.float32))
        # the join is right: sentiment >= 0 is the CSVs' binary label for every utterance
        np.testing.assert_array_equal((sp.labels >= 0).astype(int), [csv_label[u] for u in uids])
