"""Report tables of regression runs: MAE, Pearson r and Acc-7 next to Acc and W-F1."""

import csv
import io
import json

import numpy as np
import pytest

from balm.reporting.tables import build_table, load_results, to_csv, to_markdown
from report_helpers import write_run

REG = {  # (variant, seed) -> test metrics of a regression run
    ("none", 0): {"mae": 0.9, "corr": 0.60, "acc7": 0.30},
    ("none", 1): {"mae": 1.1, "corr": 0.50, "acc7": 0.34},
    ("balm", 0): {"mae": 0.8, "corr": 0.70, "acc7": 0.36},
    ("balm", 1): {"mae": 0.7, "corr": 0.64, "acc7": 0.40},
}


def _sweep(root, regression=True):
    for (variant, seed), extra in REG.items():
        run_id = f"{variant}_s{seed}"
        cfg = {"method": variant, "seed": seed, "rates": {"audio": 0.5, "text": 0.7, "visual": 0.3}}
        write_run(root, run_id, cfg, acc=0.7 + seed / 100, wf1=0.69 + seed / 100)
        if regression:
            path = root / "runs" / run_id / "result.json"
            res = json.loads(path.read_text())
            res["task"] = "regression"
            res["test"].update(extra)
            path.write_text(json.dumps(res))
    return load_results(root)


def test_regression_metrics_in_markdown_and_csv(tmp_path):
    table = build_table(_sweep(tmp_path))
    md = to_markdown(table)
    for title in ("Test Acc (%)", "Test W-F1 (%)", "Test MAE, mean", "Test Corr (Pearson r), mean", "Test Acc-7 (%)"):
        assert title in md
    mae = np.array([0.8, 0.7])
    assert f"{mae.mean():.4f} ± {mae.std(ddof=1):.4f}" in md
    acc7 = np.array([0.30, 0.34])
    assert f"{100 * acc7.mean():.2f} ± {100 * acc7.std(ddof=1):.2f}" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    head = list(rows[0])
    assert head[:7] == ["model", "n", "acc_mean", "acc_std", "wf1_mean", "wf1_std", "runs"]
    assert head[7:] == ["mae_mean", "mae_std", "corr_mean", "corr_std", "acc7_mean", "acc7_std"]
    by_model = {r["model"]: r for r in rows}
    corr = np.array([0.70, 0.64])
    assert float(by_model["late_fusion+balm"]["corr_mean"]) == pytest.approx(corr.mean())
    assert float(by_model["late_fusion+balm"]["corr_std"]) == pytest.approx(corr.std(ddof=1))


def test_classification_tables_unchanged(tmp_path):
    table = build_table(_sweep(tmp_path, regression=False))
    md = to_markdown(table)
    assert "MAE" not in md and "Acc-7" not in md
    head = to_csv(table).splitlines()[0]
    assert head == "model,n,acc_mean,acc_std,wf1_mean,wf1_std,runs"
