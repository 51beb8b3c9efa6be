"""Sentiment-regression metrics (MOSI / MOSEI protocol) against hand values, SciPy and scikit-learn."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from balm.experiments import metrics as M

T = np.array([-3.0, -2.6, -0.5, 0.0, 0.5, 1.5, 2.5, 3.0])
P = np.array([-3.4, -2.4, 0.2, -0.1, 0.5, 2.5, 2.5, 4.0])


def test_seven_classes_round_half_to_even_after_clipping():
    np.testing.assert_array_equal(M.sentiment_classes(T), [-3, -3, 0, 0, 0, 2, 2, 3])
    np.testing.assert_array_equal(M.sentiment_classes(P), [-3, -2, 0, 0, 0, 2, 2, 3])
    assert M.regression_metrics(T, P)["acc7"] == 7 / 8


def test_hand_values():
    res = M.evaluate_predictions("regression", T, P)
    # non-zero scores only (7 of them): truth >0 = [0,0,0,1,1,1,1], prediction >0 = [0,0,1,1,1,1,1]
    assert res["n"] == 7 and res["acc"] == pytest.approx(6 / 7)
    assert res["mae"] == pytest.approx(np.mean([0.4, 0.2, 0.7, 0.1, 0.0, 1.0, 0.0, 1.0]))
    # zeros kept, score >= 0: truth [0,0,0,1,1,1,1,1], prediction [0,0,1,0,1,1,1,1]
    assert res["acc_has0"] == pytest.approx(6 / 8)
    assert res["wf1_has0"] == pytest.approx(skm.f1_score(T >= 0, P >= 0, average="weighted"))
    assert res["wf1"] == pytest.approx(skm.f1_score(T[T != 0] > 0, P[T != 0] > 0, average="weighted"))
    assert res["corr"] == pytest.approx(stats.pearsonr(T, P)[0], abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_against_scipy_sklearn_and_a_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 300))
    t = np.round(rng.uniform(-3, 3, n) * 5) / 5  # MOSI-like scores in steps of 0.2, some exactly 0
    t[rng.random(n) < 0.1] = 0.0
    p = t + rng.normal(0, 1.2, n)
    res = M.regression_metrics(t, p)
    assert res["corr"] == pytest.approx(stats.pearsonr(t, p)[0], abs=1e-10)
    assert res["mae"] == pytest.approx(skm.mean_absolute_error(t, p), abs=1e-12)
    hits = 0
    for a, b in zip(t, p):  # a plain loop: clip to [-3, 3], round half to even
        hits += round(min(max(a, -3.0), 3.0)) == round(min(max(b, -3.0), 3.0))
    assert res["acc7"] == pytest.approx(hits / n, abs=1e-12)
    assert res["acc_has0"] == pytest.approx(skm.accuracy_score(t >= 0, p >= 0))
    keep = t != 0
    full = M.evaluate_predictions("regression", t, p)
    assert full["acc"] == pytest.approx(skm.accuracy_score(t[keep] > 0, p[keep] > 0))
    assert full["wf1"] == pytest.approx(skm.f1_score(t[keep] > 0, p[keep] > 0, average="weighted"))


def test_constant_prediction_has_no_correlation():
    assert math.isnan(M.pearson([1.0, 2.0, 3.0], [0.5, 0.5, 0.5]))
    assert math.isnan(M.pearson([1.0], [2.0]))
    with pytest.raises(ValueError, match="differ in length"):
        M.pearson([1.0, 2.0], [1.0])
