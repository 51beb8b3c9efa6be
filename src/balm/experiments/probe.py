"""Linear probe per modality: how much each modality alone says about the label.

For each modality, ``LogisticRegression`` (scikit-learn, L2, C = 1) is fit on the standardised
training features (mean and std of the training split) and scored on the test split; for a
regression dataset the label is the sign (score >= 0). The gap between modalities is the
imbalance BALM addresses.
"""

from __future__ import annotations

import numpy as np

from balm.data.dataset import Dataset

from balm.features.deps import require


def linear_probe(ds: Dataset, train: str = "train", test: str = "test", max_iter: int = 2000) -> dict[str, dict]:
    """modality -> {"acc", "wf1", "dim"} of a logistic regression fit on ``train``, scored on ``test``."""
    lm = require("sklearn.linear_model", "scikit-learn", purpose="the linear probe")
    from balm.experiments.metrics import accuracy, weighted_f1

    tr, te = ds[train], ds[test]
    y_tr, y_te = tr.labels, te.labels
    if ds.task == "regression":
        y_tr, y_te = (y_tr >= 0).astype(np.int64), (y_te >= 0).astype(np.int64)
    out = {}
    for m in ds.modalities:
        x_tr, x_te = tr.features[m].astype(np.float64), te.features[m].astype(np.float64)
        mean, std = x_tr.mean(0), x_tr.std(0)
        std[std < 1e-12] = 1.0
        clf = lm.LogisticRegression(max_iter=max_iter).fit((x_tr - mean) / std, y_tr)
        pred = clf.predict((x_te - mean) / std)
        c = int(max(y_tr.max(), y_te.max()) + 1)
        out[m] = {"acc": accuracy(y_te, pred), "wf1": weighted_f1(y_te, pred, c), "dim": int(x_tr.shape[1])}
    return out
