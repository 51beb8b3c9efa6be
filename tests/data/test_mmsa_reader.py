import pickle

import numpy as np
import pytest

from balm.data import load
from balm.data.errors import DataError
from balm.data.loader import detect_format
from balm.data.mmsa_reader import MMSA_CLASSES, MULT_IEMOCAP, read_mmsa

D = {"text": 6, "audio": 5, "vision": 4}
N = {"train": 5, "valid": 2, "test": 3}
T_TEXT, T_AUDIO, T_VISION = 7, 9, 8


def _loop_mean(x, real):
    """Plain-loop mean over the real steps (zeros when there are none)."""
    out = np.zeros((x.shape[0], x.shape[2]))
    for i in range(x.shape[0]):
        steps = [x[i, t] for t in range(x.shape[1]) if real[i][t]]
        if steps:
            out[i] = np.sum(steps, axis=0) / len(steps)
    return out


def _mmsa_unaligned(seed=0, videos=True):
    """MMSA ``unaligned_50.pkl`` layout: BERT text with a text_bert attention mask, audio /
    vision with their lengths (real steps first, then zero padding)."""
    rng = np.random.default_rng(seed)
    out, real = {}, {}
    for k, (split, n) in enumerate(N.items()):
        tl = rng.integers(2, T_TEXT + 1, n)
        al = rng.integers(1, T_AUDIO + 1, n)
        vl = rng.integers(1, T_VISION + 1, n)
        mask = (np.arange(T_TEXT)[None] < tl[:, None]).astype(np.float64)
        text = rng.standard_normal((n, T_TEXT, D["text"])).astype(np.float32)  # padding steps are not zero (BERT)
        audio = rng.standard_normal((n, T_AUDIO, D["audio"])).astype(np.float32)
        vision = rng.standard_normal((n, T_VISION, D["vision"])).astype(np.float32)
        for i in range(n):
            audio[i, al[i]:] = 0
            vision[i, vl[i]:] = 0
        audio[0, 0, 1] = -np.inf  # the public loaders read -inf audio as 0
        bert = np.stack([rng.integers(100, 999, (n, T_TEXT)) * mask, mask, np.zeros((n, T_TEXT))], axis=1)
        # ids: two videos per split, clips listed out of order
        vids = [f"vid{k}{i % 2}" for i in range(n)] if videos else [f"u{k}{i}" for i in range(n)]
        clips = [str(n - i) for i in range(n)]
        out[split] = {
            "raw_text": ["w"] * n, "text": text, "text_bert": bert, "audio": audio, "vision": vision,
            "audio_lengths": list(al), "vision_lengths": list(vl),
            "id": [f"{v}$_$%s" % c for v, c in zip(vids, clips)] if videos else vids,
            "regression_labels": np.round(rng.uniform(-3, 3, n), 1).astype(np.float32),
            "classification_labels": rng.integers(0, 3, n).astype(np.float32),
            "annotations": ["x"] * n,
        }
        real[split] = {"text": mask > 0, "audio": np.arange(T_AUDIO)[None] < al[:, None],
                       "vision": np.arange(T_VISION)[None] < vl[:, None]}
    return out, real


def _write(tmp_path, obj, name="unaligned_50.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def _expected_order(ids):
    """Rows grouped by video (first appearance), clips in numeric order."""
    vids = list(dict.fromkeys(i.split("$_$")[0] for i in ids))
    key = sorted(range(len(ids)), key=lambda r: (vids.index(ids[r].split("$_$")[0]), int(ids[r].split("$_$")[1])))
    return key, vids


def test_unaligned_round_trip(tmp_path):
    obj, real = _mmsa_unaligned()
    ds = read_mmsa(_write(tmp_path, obj))
    assert ds.task == "regression" and ds.modalities == ("audio", "text", "visual")
    assert ds.dims() == {"audio": 5, "text": 6, "visual": 4} and ds.metadata["label_key"] == "regression_labels"
    for split, key in (("train", "train"), ("dev", "valid"), ("test", "test")):
        part, sp = obj[key], ds[split]
        order, vids = _expected_order(part["id"])
        assert sp.sequence_ids == vids
        assert sp.lengths.tolist() == [sum(i.startswith(v + "$") for i in part["id"]) for v in vids]
        audio = np.where(np.isneginf(part["audio"]), 0, part["audio"])
        for m, x in (("audio", audio), ("text", part["text"]), ("visual", part["vision"])):
            want = _loop_mean(x, real[key]["vision" if m == "visual" else m])[order]
            np.testing.assert_allclose(sp.features[m], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(sp.labels, part["regression_labels"][order])
    assert np.isfinite(ds["train"].features["audio"]).all()


def test_classification_labels_and_load(tmp_path):
    obj, _ = _mmsa_unaligned(seed=1, videos=False)
    path = _write(tmp_path, obj)
    assert detect_format(path) == "mmsa"
    ds = load(path, label="classification")
    assert ds.task == "classification" and ds.label_names == list(MMSA_CLASSES)
    assert ds["train"].sequence_ids == obj["train"]["id"] and (ds["train"].lengths == 1).all()
    np.testing.assert_array_equal(ds["test"].labels, obj["test"]["classification_labels"].astype(np.int64))


def test_aligned_file_uses_the_bert_mask_for_every_modality(tmp_path):
    obj, real = _mmsa_unaligned(seed=2)
    for part in obj.values():  # aligned_50.pkl: every modality on the text's steps, no lengths
        n = len(part["id"])
        part["audio"] = np.random.default_rng(0).standard_normal((n, T_TEXT, D["audio"])).astype(np.float32)
        part["vision"] = np.random.default_rng(1).standard_normal((n, T_TEXT, D["vision"])).astype(np.float32)
        del part["audio_lengths"], part["vision_lengths"]
    ds = read_mmsa(_write(tmp_path, obj, "aligned_50.pkl"))
    order, _ = _expected_order(obj["test"]["id"])
    mask = real["test"]["text"]
    np.testing.assert_allclose(ds["test"].features["audio"], _loop_mean(obj["test"]["audio"], mask)[order], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds["test"].features["visual"], _loop_mean(obj["test"]["vision"], mask)[order], rtol=1e-5, atol=1e-6)


def test_mult_layout_zero_padding_and_emotion_labels(tmp_path):
    """MulT ``iemocap_data.pkl``: zero-padded steps, (N, 4, 2) labels, (N, 3) byte-string ids."""
    rng = np.random.default_rng(3)
    obj, real = {}, {}
    for split, n in N.items():
        part = {}
        for key, t in (("text", 6), ("audio", 6), ("vision", 6)):
            x = rng.standard_normal((n, t, D[key])).astype(np.float32)
            lead = rng.integers(0, t, n)  # MulT pads at the front with zeros
            for i in range(n):
                x[i, : lead[i]] = 0
            part[key] = x
            real.setdefault(split, {})[key] = (x != 0).any(axis=2)
        cls = rng.integers(0, 4, n)
        lab = np.zeros((n, 4, 2), np.float32)
        lab[:, :, 0] = 1
        lab[np.arange(n), cls] = [0, 1]
        part["labels"] = lab
        part["id"] = np.array([[f"{split}{i}".encode(), b"0", b"1"] for i in range(n)])
        obj[split] = part
    ds = read_mmsa(_write(tmp_path, obj, "iemocap_data.pkl"))
    assert ds.task == "classification" and ds.label_names == list(MULT_IEMOCAP)
    sp = ds["dev"]
    assert sp.sequence_ids == ["valid0_0_1", "valid1_0_1"]
    np.testing.assert_array_equal(sp.labels, obj["valid"]["labels"].argmax(-1).argmax(-1))
    np.testing.assert_allclose(sp.features["text"], _loop_mean(obj["valid"]["text"], real["valid"]["text"]), rtol=1e-5, atol=1e-6)
    # an utterance positive for two emotions has no single class
    obj["test"]["labels"][0, :, :] = [0, 1]
    with pytest.raises(DataError, match=r"test\.labels.*utterance 0 is positive for 4 emotions"):
        read_mmsa(_write(tmp_path, obj, "iemocap_data.pkl"))


def test_sequences_are_refused(tmp_path):
    path = _write(tmp_path, _mmsa_unaligned(seed=4)[0])
    with pytest.raises(DataError, match=r"field 'pool'.*cannot be kept as sequences; use pool='mean'"):
        read_mmsa(path, pool="none")


def test_wrong_width_names_split_and_key(tmp_path):
    obj, _ = _mmsa_unaligned(seed=5)
    obj["valid"]["vision"] = np.zeros((N["valid"], T_VISION, D["vision"] + 1), np.float32)
    path = _write(tmp_path, obj)
    with pytest.raises(DataError) as err:
        read_mmsa(path)
    msg = str(err.value)
    assert str(path) in msg and "field 'valid.vision'" in msg and "dimension 5 differs from 4, the dimension of train.vision" in msg


def test_id_in_two_splits_is_refused(tmp_path):
    obj, _ = _mmsa_unaligned(seed=6, videos=False)
    obj["test"]["id"][1] = obj["train"]["id"][0]
    path = _write(tmp_path, obj)
    with pytest.raises(DataError) as err:
        read_mmsa(path)
    assert f"{obj['train']['id'][0]!r} is in both 'train' and 'test'" in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(
    "edit, field, text",
    [
        (lambda o: o.pop("valid"), "valid", "missing split key 'valid'"),
        (lambda o: o["test"].pop("audio"), "test.audio", "missing key 'audio'"),
        (lambda o: o["train"].__setitem__("regression_labels", np.zeros((N["train"], 2))), "train.regression_labels",
         "expected one label per utterance"),
        (lambda o: o["train"].__setitem__("regression_labels", np.zeros(N["train"] - 1)), "train.regression_labels",
         "expected 5 labels"),
        (lambda o: o["test"].__setitem__("audio_lengths", [T_AUDIO + 1] * N["test"]), "test.audio_lengths",
         "step counts in [0, 9]"),
        (lambda o: o["valid"].__setitem__("id", ["a"]), "valid.id", "expected 2 ids"),
        (lambda o: o["train"]["vision"].__setitem__((1, 0, 0), np.nan), "train.vision", "non-finite feature value in utterance 1"),
    ],
)
def test_layout_errors(tmp_path, edit, field, text):
    obj, _ = _mmsa_unaligned(seed=7)
    edit(obj)
    path = _write(tmp_path, obj)
    with pytest.raises(DataError) as err:
        read_mmsa(path)
    assert str(path) in str(err.value) and f"field {field!r}" in str(err.value) and text in str(err.value)
