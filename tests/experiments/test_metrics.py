"""Metrics against scikit-learn on random data, including classes never predicted or absent."""

import numpy as np
import pytest
from sklearn import metrics as skm

from balm.experiments import metrics as M


@pytest.mark.parametrize("seed", range(6))
def test_accuracy_and_weighted_f1_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    c = 6
    n = int(rng.integers(5, 200))
    y = rng.integers(0, c, n)
    p = rng.integers(0, c, n)
    if seed % 2:  # some classes never predicted, one absent from the labels
        p = np.where(p >= 4, 0, p)
        y = np.where(y == 1, 2, y)
    assert M.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)
    assert M.weighted_f1(y, p, c) == pytest.approx(
        skm.f1_score(y, p, average="weighted", zero_division=0), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(4))
def test_classification_report_matches_sklearn(seed):
    rng = np.random.default_rng(100 + seed)
    c = 5
    y = rng.integers(0, c, 80)
    p = np.where(rng.random(80) < 0.6, y, rng.integers(0, c, 80))
    p[p == 3] = 0  # class 3 never predicted
    names = [f"c{i}" for i in range(c)]
    ours = M.classification_report(y, p, c, names)
    ref = skm.classification_report(y, p, labels=list(range(c)), target_names=names, output_dict=True, zero_division=0)
    for name in names + ["macro avg", "weighted avg"]:
        for k, rk in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"), ("support", "support")):
            assert ours[name][k] == pytest.approx(ref[name][rk], abs=1e-12), (name, k)
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y, p))


def test_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(7)
    y, p = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    np.testing.assert_array_equal(M.confusion_matrix(y, p, 4), skm.confusion_matrix(y, p, labels=range(4)))


def test_binary_from_regression_drops_zero_scores():
    t = np.array([-2.0, 0.0, 1.5, 0.2, -0.4, 0.0, 3.0])
    s = np.array([-1.0, 2.0, -0.5, 0.3, 0.1, -1.0, 2.0])
    tb, pb = M.binary_from_regression(t, s)
    np.testing.assert_array_equal(tb, [0, 1, 1, 0, 1])
    np.testing.assert_array_equal(pb, [0, 0, 1, 1, 1])
    res = M.evaluate_predictions("regression", t, s)
    assert res["n"] == 5
    assert res["acc"] == pytest.approx(3 / 5)
    assert res["wf1"] == pytest.approx(skm.f1_score(tb, pb, average="weighted"))
    assert res["mae"] == pytest.approx(np.abs(t - s).mean())


def test_evaluate_predictions_argmaxes_scores():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(30, 4))
    y = rng.integers(0, 4, 30)
    res = M.evaluate_predictions("classification", y, scores, 4)
    assert res["acc"] == pytest.approx(skm.accuracy_score(y, scores.argmax(1)))
    assert res["report"]["weighted avg"]["f1"] == pytest.approx(res["wf1"])


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        M.accuracy([0, 1], [0])
