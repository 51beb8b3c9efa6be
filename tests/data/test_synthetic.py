import warnings

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from balm.data.synthetic import IEMOCAP_PRIOR, dialogue_lengths, make_synthetic


@pytest.fixture(scope="module")
def iemocap():
    return make_synthetic("iemocap", seed=0)


@pytest.fixture(scope="module")
def mosei():
    return make_synthetic("mosei", seed=0)


def _probe(xtr, ytr, xte, yte):
    """Linear probe: logistic regression on standardised features, train -> test accuracy."""
    sc = StandardScaler().fit(xtr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(max_iter=1000).fit(sc.transform(xtr), ytr)
    return clf.score(sc.transform(xte), yte)


def test_iemocap_shapes(iemocap):
    assert iemocap.task == "classification" and iemocap.num_classes == 6
    assert iemocap.label_names == ["hap", "sad", "neu", "ang", "exc", "fru"]
    assert iemocap.speaker_names == ["M", "F"]
    assert list(iemocap.splits) == ["train", "test"]
    assert iemocap.modalities == ("audio", "text", "visual")
    assert iemocap.dims() == {"audio": 1582, "text": 1024, "visual": 342}
    for name, s, n in (("train", 120, 5810), ("test", 31, 1623)):
        sp = iemocap[name]
        assert sp.num_sequences == s and sp.num_utterances == n and int(sp.lengths.sum()) == n
        assert sp.lengths.min() >= 20 and sp.lengths.max() <= 110 and sp.lengths.std() > 5
        assert all(x.dtype == np.float32 and x.shape[0] == n for x in sp.features.values())
        assert sp.labels.dtype == np.int64 and sp.labels.min() >= 0 and sp.labels.max() <= 5
        assert set(np.unique(sp.speakers)) == {0, 1}
        assert sp.mask is None and len(set(sp.sequence_ids)) == s
        # both speakers appear in (nearly) every dialogue
        both = [len(set(sp.sequence(i)["speakers"].tolist())) == 2 for i in range(s)]
        assert np.mean(both) > 0.95
    assert not set(iemocap["train"].sequence_ids) & set(iemocap["test"].sequence_ids)


def test_iemocap_class_imbalance(iemocap):
    labels = np.concatenate([iemocap["train"].labels, iemocap["test"].labels])
    share = np.bincount(labels, minlength=6) / labels.size
    assert np.abs(share - IEMOCAP_PRIOR).max() < 0.06
    assert share.argmax() == 5 and share.argmin() == 0  # fru most, hap least, as in IEMOCAP


def test_mosei_shapes_and_scores(mosei):
    assert mosei.task == "regression" and mosei.num_classes is None and mosei.label_names is None
    assert mosei.modalities == ("audio", "text", "visual")
    assert mosei.dims() == {"audio": 512, "text": 1024, "visual": 1024}
    for name, s, n in (("train", 2249, 16326), ("dev", 300, 1871), ("test", 676, 4659)):
        sp = mosei[name]
        assert sp.num_sequences == s and sp.num_utterances == n and int(sp.lengths.sum()) == n
        assert sp.lengths.min() >= 1
        assert all(x.dtype == np.float32 for x in sp.features.values())
        y = sp.labels
        assert y.dtype == np.float32 and y.min() >= -3 and y.max() <= 3
        assert 0.02 < (y == 0).mean() < 0.3 and (y > 0).any() and (y < 0).any()
        assert np.allclose(y * 3, np.rint(y * 3), atol=1e-5)  # averaged ratings: multiples of 1/3
        assert (sp.speakers == 0).all()


def test_deterministic_in_seed(iemocap):
    again = make_synthetic("iemocap", seed=0)
    other = make_synthetic("iemocap", seed=1)
    for name in ("train", "test"):
        a, b, c = iemocap[name], again[name], other[name]
        assert np.array_equal(a.lengths, b.lengths) and np.array_equal(a.labels, b.labels)
        assert np.array_equal(a.speakers, b.speakers)
        for m in a.modalities:
            assert np.array_equal(a.features[m], b.features[m])
            assert not np.array_equal(a.features[m], c.features[m])
        assert not np.array_equal(a.labels, c.labels)


def test_split_subset_matches_full_generation(mosei):
    dev = make_synthetic("mosei", seed=0, splits=["dev"])
    assert list(dev.splits) == ["dev"]
    a, b = dev["dev"], mosei["dev"]
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.lengths, b.lengths)
    assert all(np.array_equal(a.features[m], b.features[m]) for m in a.modalities)
    with pytest.raises(ValueError, match="dev"):
        make_synthetic("iemocap", seed=0, splits=["dev"])


def test_iemocap_probe_accuracies(iemocap):
    tr, te = iemocap["train"], iemocap["test"]
    acc = {m: _probe(tr.features[m], tr.labels, te.features[m], te.labels) for m in tr.modalities}
    assert acc["text"] > acc["audio"] + 0.1 > acc["visual"] + 0.15
    for m, target in (("text", 0.60), ("audio", 0.40), ("visual", 0.28)):
        assert abs(acc[m] - target) < 0.08, acc
    majority = np.bincount(te.labels).max() / te.num_utterances
    assert acc["visual"] >= majority - 0.02


def test_mosei_binary_probe_accuracies(mosei):
    tr, te = mosei["train"], mosei["test"]
    ktr, kte = tr.labels != 0, te.labels != 0
    ytr, yte = tr.labels[ktr] > 0, te.labels[kte] > 0
    acc = {m: _probe(tr.features[m][ktr], ytr, te.features[m][kte], yte) for m in tr.modalities}
    assert acc["text"] > acc["audio"] + 0.05 > acc["visual"] + 0.08
    for m, target in (("text", 0.80), ("audio", 0.69), ("visual", 0.63)):
        assert abs(acc[m] - target) < 0.06, acc


def test_labels_persist_within_dialogues(iemocap):
    sp = iemocap["train"]
    same = sp.labels[1:] == sp.labels[:-1]
    within = np.ones(sp.num_utterances - 1, dtype=bool)
    within[sp.offsets[1:-1] - 1] = False  # drop pairs that cross a dialogue boundary
    share = np.bincount(sp.labels) / sp.num_utterances
    assert same[within].mean() > (share**2).sum() + 0.3


def test_context_features_beat_per_utterance_probe(iemocap):
    tr, te = iemocap["train"], iemocap["test"]

    def reduce(split, pca, sc):
        return pca.transform(sc.transform(split.features["text"]))

    sc = StandardScaler().fit(tr.features["text"])
    pca = PCA(32, random_state=0).fit(sc.transform(tr.features["text"]))

    def with_context(split):
        z = reduce(split, pca, sc)
        off = split.offsets
        start = np.repeat(off[:-1], split.lengths)
        end = np.repeat(off[1:], split.lengths) - 1
        i = np.arange(split.num_utterances)
        neighbours = (z[np.maximum(i - 1, start)] + z[np.minimum(i + 1, end)]) / 2
        seq = np.repeat(np.arange(split.num_sequences), split.lengths)
        dmean = np.stack([np.bincount(seq, weights=z[:, j]) for j in range(z.shape[1])], 1) / split.lengths[:, None]
        return np.hstack([z, neighbours, z - dmean[seq]])

    plain = _probe(reduce(tr, pca, sc), tr.labels, reduce(te, pca, sc), te.labels)
    context = _probe(with_context(tr), tr.labels, with_context(te), te.labels)
    assert context > plain + 0.05


def test_dialogue_lengths_exact_and_checked():
    rng = np.random.default_rng(0)
    for s, n, lo, hi in ((120, 5810, 20, 110), (31, 1623, 20, 110), (300, 1871, 1, 30), (5, 5, 1, 3), (4, 12, 3, 3)):
        lengths = dialogue_lengths(rng, s, n, lo, hi)
        assert lengths.size == s and int(lengths.sum()) == n and lengths.min() >= lo and lengths.max() <= hi
    with pytest.raises(ValueError, match="cannot split 100 utterances into 3"):
        dialogue_lengths(rng, 3, 100, 1, 30)


def test_unknown_kind():
    with pytest.raises(ValueError, match="iemocap"):
        make_synthetic("meld")
