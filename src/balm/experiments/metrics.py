"""Evaluation metrics in numpy: accuracy, weighted F1, the per-class report, binary-from-regression,
and the sentiment-regression metrics of the CMU-MOSI / MOSEI literature (MAE, Pearson r, 7-class
accuracy).

Conventions follow scikit-learn's (``accuracy_score``, ``f1_score(average="weighted")``,
``classification_report(..., zero_division=0)``) so numbers are comparable with published ones:
a class that is never predicted has precision 0, a class absent from the labels has support 0 and
does not count in the weighted average.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _as_labels(y) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {a.shape}")
    return a.astype(np.int64)


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """``(C, C)`` counts, rows = true class, columns = predicted class."""
    t, p = _as_labels(y_true), _as_labels(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    if t.size and (t.min() < 0 or p.min() < 0):
        raise ValueError("class labels must be non-negative integers")
    c = int(num_classes) if num_classes is not None else int(max(t.max(initial=-1), p.max(initial=-1)) + 1)
    if t.size and max(t.max(), p.max()) >= c:
        raise ValueError(f"a label is >= num_classes ({c})")
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c)


def accuracy(y_true, y_pred) -> float:
    """Share of exact matches (0.0 for no samples)."""
    t, p = _as_labels(y_true), _as_labels(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    return float((t == p).mean()) if t.size else 0.0


def per_class(y_true, y_pred, num_classes: int | None = None) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support (zero where undefined)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = support + predicted  # = 2tp + fp + fn
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def weighted_f1(y_true, y_pred, num_classes: int | None = None) -> float:
    """Support-weighted mean of the per-class F1 scores (sklearn's ``average="weighted"``)."""
    pc = per_class(y_true, y_pred, num_classes)
    total = pc["support"].sum()
    return float((pc["f1"] * pc["support"]).sum() / total) if total else 0.0


def classification_report(y_true, y_pred, num_classes: int, label_names: Sequence[str] | None = None) -> dict:
    """Per-class precision/recall/F1/support for classes ``0..num_classes-1``, plus accuracy and the
    macro and weighted averages (the keys of sklearn's ``classification_report(output_dict=True)``)."""
    names = list(label_names) if label_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} label names for {num_classes} classes")
    pc = per_class(y_true, y_pred, num_classes)
    out: dict = {}
    for c, name in enumerate(names):
        out[name] = {k: (int(pc[k][c]) if k == "support" else float(pc[k][c])) for k in ("precision", "recall", "f1", "support")}
    sup = pc["support"]
    total = int(sup.sum())
    out["accuracy"] = accuracy(y_true, y_pred)
    out["macro avg"] = {k: float(pc[k].mean()) for k in ("precision", "recall", "f1")} | {"support": total}
    out["weighted avg"] = {
        k: (float((pc[k] * sup).sum() / total) if total else 0.0) for k in ("precision", "recall", "f1")
    } | {"support": total}
    return out


def binary_from_regression(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """CMU-MOSEI protocol: drop samples whose true score is 0, then label = score > 0 (1 positive)."""
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    keep = t != 0
    return (t[keep] > 0).astype(np.int64), (p[keep] > 0).astype(np.int64)


def pearson(a, b) -> float:
    """Pearson correlation ``cov(a, b) / (std(a) std(b))``; NaN when either is constant or empty."""
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"a and b differ in length: {x.shape[0]} vs {y.shape[0]}")
    if x.size < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else float("nan")


def sentiment_classes(scores, low: float = -3.0, high: float = 3.0) -> np.ndarray:
    """Scores clipped to ``[low, high]`` and rounded half to even (``np.round``): the 7 classes
    -3..3 of the MOSI / MOSEI Acc-7."""
    return np.round(np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), low, high)).astype(np.int64)


def regression_metrics(y_true, y_pred) -> dict:
    """Sentiment-regression metrics over all samples: ``mae`` = mean |y - ŷ|, ``corr`` = Pearson r,
    ``acc7`` = accuracy of :func:`sentiment_classes`, and ``acc_has0`` / ``wf1_has0`` = binary
    (score >= 0 vs < 0) accuracy and weighted F1 with the zero scores kept."""
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    if not t.size:
        return {"mae": 0.0, "corr": float("nan"), "acc7": 0.0, "acc_has0": 0.0, "wf1_has0": 0.0}
    tb, pb = (t >= 0).astype(np.int64), (p >= 0).astype(np.int64)
    return {
        "mae": float(np.abs(t - p).mean()),
        "corr": pearson(t, p),
        "acc7": accuracy(sentiment_classes(t), sentiment_classes(p)),
        "acc_has0": accuracy(tb, pb),
        "wf1_has0": weighted_f1(tb, pb, 2),
    }


def evaluate_predictions(task: str, y_true, prediction, num_classes: int | None = None,
                         label_names: Sequence[str] | None = None) -> dict:
    """Metrics of one split: ``acc``, ``wf1``, ``n`` and the per-class ``report``.

    Classification: ``prediction`` holds class indices (or ``(N, C)`` scores, arg-maxed).
    Regression: ``prediction`` holds scores; ``acc`` / ``wf1`` are binary positive/negative with
    score-0 samples left out (``n`` counts the kept samples), plus :func:`regression_metrics`
    over all samples (``mae``, ``corr``, ``acc7``, ``acc_has0``, ``wf1_has0``).
    """
    if task == "regression":
        t_score = np.asarray(y_true, dtype=np.float64).reshape(-1)
        p_score = np.asarray(prediction, dtype=np.float64).reshape(-1)
        t, p = binary_from_regression(t_score, p_score)
        res = {
            "acc": accuracy(t, p),
            "wf1": weighted_f1(t, p, 2),
            "n": int(t.size),
            **regression_metrics(t_score, p_score),
            "report": classification_report(t, p, 2, ["negative", "positive"]),
        }
        return res
    pred = np.asarray(prediction)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    c = num_classes if num_classes is not None else int(max(np.max(y_true, initial=-1), pred.max(initial=-1)) + 1)
    return {
        "acc": accuracy(y_true, pred),
        "wf1": weighted_f1(y_true, pred, c),
        "n": int(np.asarray(y_true).size),
        "report": classification_report(y_true, pred, c, label_names),
    }
