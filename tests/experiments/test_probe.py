"""The linear probe per modality (``balm data probe``) against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from balm.cli.main import main


def test_linear_probe_matches_sklearn(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from balm.data.native import save_dataset
    from balm.data.synthetic import make_synthetic
    from balm.experiments.probe import linear_probe

    ds = make_synthetic(like="iemocap", seed=0)
    res = linear_probe(ds)
    tr, te = ds["train"], ds["test"]
    for m in ds.modalities:
        sc = StandardScaler().fit(tr.features[m].astype(np.float64))
        clf = LogisticRegression(max_iter=2000).fit(sc.transform(tr.features[m].astype(np.float64)), tr.labels)
        acc = float((clf.predict(sc.transform(te.features[m].astype(np.float64))) == te.labels).mean())
        assert res[m]["acc"] == pytest.approx(acc, abs=2 / te.num_utterances)
    save_dataset(ds, tmp_path / "ds")
    assert main(["data", "probe", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert all(f"acc {res[m]['acc']:.4f}" in out for m in ds.modalities)
