"""`balm report`: the tables' means and stds equal those computed here from the result files."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from balm.cli.main import main
from balm.experiments.sweep import expand, run_sweep
from balm.reporting.figures import fit_line, tsne_embed
from exp_helpers import base_config

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep_dir(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    sweep = expand({**base_config(tiny_data, epochs=2, tsne_samples=40),
                    "sweep": {"rates": [[0.5, 0.7, 0.3], [0.3, 0.5, 0.0]], "method": ["none", "balm"], "seed": [0, 1]}})
    assert len(sweep.runs) == 8
    run_sweep(sweep, out, workers=2)
    return out


def _by_cell(sweep_dir: Path):
    cells = {}
    for d in (sweep_dir / "runs").iterdir():
        res = json.loads((d / "result.json").read_text())
        rates = "(" + ", ".join(f"{v:g}" for v in res["config"]["rates"]) + ")"
        model = "late_fusion" if res["config"]["method"] == "none" else "late_fusion+balm"
        cells.setdefault((rates, model), []).append(res["test"])
    return cells


def test_report_tables_match_result_files(sweep_dir, capsys):
    assert main(["report", str(sweep_dir), "--tsne", "first"]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(open(sweep_dir / "report" / "table.csv")))
    cells = _by_cell(sweep_dir)
    assert len(rows) == len(cells) == 4
    for row in rows:
        tests = cells[(row["rates"], row["model"])]
        assert int(row["n"]) == len(tests) == 2
        for metric in ("acc", "wf1"):
            vals = np.array([t[metric] for t in tests])
            assert float(row[f"{metric}_mean"]) == pytest.approx(vals.mean(), abs=1e-12)
            assert float(row[f"{metric}_std"]) == pytest.approx(vals.std(ddof=1), abs=1e-12)
    # the Markdown table prints the same numbers, in percent
    md = (sweep_dir / "report" / "report.md").read_text()
    tests = cells[("(0.5, 0.7, 0.3)", "late_fusion+balm")]
    w = np.array([t["wf1"] for t in tests])
    assert f"{100 * w.mean():.2f} ± {100 * w.std(ddof=1):.2f}" in md and "W-F1" in printed
    wide = list(csv.reader(open(sweep_dir / "report" / "table_wf1.csv")))
    assert wide[0] == ["rates", "late_fusion", "late_fusion+balm"]
    # summary.csv rebuilt from the result files: one row per run
    summary = list(csv.DictReader(open(sweep_dir / "summary.csv")))
    assert len(summary) == 8 and len({r["run_id"] for r in summary}) == 8


def test_report_figures_and_lemma1_without_enough_levels(sweep_dir):
    from balm.reporting.report import make_report

    rep = make_report(sweep_dir, tsne="first")
    names = sorted(p.name for p in rep["figures"])
    assert sum(n.startswith("curves_") for n in names) == 2  # only BALM runs log KL / cos / μ
    assert sum(n.startswith("tsne_") for n in names) == 2  # one per model
    assert sum(n.startswith("lemma1_") for n in names) == 2  # the norms, even without a fit
    assert sum(n.startswith("heads_") for n in names) == 1  # BALM has heads, the plain model none
    for p in rep["figures"]:
        assert p.read_bytes()[:8] == PNG
    # two rate settings give each modality two availabilities: no slope is fitted, the report says so
    assert list(csv.DictReader(open(sweep_dir / "report" / "lemma1_fit.csv"))) == []
    md = (sweep_dir / "report" / "report.md").read_text()
    assert "no slope is fitted" in md and "not available for late_fusion" in md
    # the points are still written: (1 - realised train rate, mean step gradient norm)
    pts = list(csv.DictReader(open(sweep_dir / "report" / "lemma1.csv")))
    for d in (sweep_dir / "runs").iterdir():
        res = json.loads((d / "result.json").read_text())
        steps = [json.loads(l) for l in open(d / "stats.jsonl") if '"kind":"step"' in l]
        (p,) = [p for p in pts if p["run_id"] == d.name and p["modality"] == "visual"]
        assert float(p["availability"]) == pytest.approx(1 - res["realised_rates"]["train"]["visual"])
        assert float(p["grad_norm"]) == pytest.approx(np.mean([s["encoder_grad_norm"]["visual"] for s in steps]))
    # every run's Shapley values are in the table, averaged over the seeds
    rows = list(csv.DictReader(open(sweep_dir / "report" / "shapley.csv")))
    assert len(rows) == 4 and all(int(r["runs"]) == 2 for r in rows)


def test_fit_line_and_tsne_helpers():
    x = np.array([0.3, 0.5, 0.7, 0.9])
    b, a, r2 = fit_line(x, 2.0 + 3.0 * x)
    assert (b, a, r2) == pytest.approx((3.0, 2.0, 1.0))
    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(0, 0.1, (20, 5)), rng.normal(5, 0.1, (20, 5))])
    y = tsne_embed(blobs)
    assert y.shape == (40, 2)
    # two well-separated clusters stay separated: every point is nearer its own cluster's centre
    c0, c1 = y[:20].mean(0), y[20:].mean(0)
    assert np.all(np.linalg.norm(y[:20] - c0, axis=1) < np.linalg.norm(y[:20] - c1, axis=1))


def test_report_on_empty_folder_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no finished run" in capsys.readouterr().err
