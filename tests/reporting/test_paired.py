"""Paired comparison in `balm report`: means, stds and wins of per-seed differences, computed here
independently from hand-made result files (and from a tiny real sweep with a `cases` axis)."""

import csv
import io
import json

import numpy as np
import pytest

from balm.cli.main import main
from balm.experiments.sweep import expand, run_sweep
from balm.reporting.paired import build_paired
from balm.reporting.report import make_report
from balm.reporting.tables import load_results
from exp_helpers import base_config
from report_helpers import write_run

RATES = ({"audio": 0.5, "text": 0.7, "visual": 0.3}, {"audio": 0.3, "text": 0.5, "visual": 0.7})


def _label(rates: dict) -> str:
    return "(" + ", ".join(f"{v:g}" for v in rates.values()) + ")"


@pytest.fixture()
def hand_sweep(tmp_path):
    """mmgcn x {none, balm, balm-d} and late_fusion x {none, balm}, 2 rate settings, seeds 0-2, with
    random metrics; mmgcn+balm-d lacks seed 2 at the second setting (paired on seeds 0 and 1 only)."""
    rng = np.random.default_rng(7)
    metrics = {}
    for backbone, variants in (("mmgcn", ("none", "balm", "balm-d")), ("late_fusion", ("none", "balm"))):
        for ri, rates in enumerate(RATES):
            for variant in variants:
                for seed in range(3):
                    if (backbone, variant, ri, seed) == ("mmgcn", "balm-d", 1, 2):
                        continue
                    acc, wf1 = (float(x) for x in rng.uniform(0.3, 0.7, 2))
                    metrics[(backbone, variant, ri, seed)] = (acc, wf1)
                    write_run(tmp_path, f"{backbone}-{variant}-{ri}-{seed}",
                               {"backbone": backbone, "method": variant, "rates": rates, "seed": seed}, acc, wf1)
    return tmp_path, metrics


def _expected(metrics, backbone, variant, ref, ri):
    seeds = [s for s in range(3) if (backbone, variant, ri, s) in metrics and (backbone, ref, ri, s) in metrics]
    d = np.array([[metrics[(backbone, variant, ri, s)][k] - metrics[(backbone, ref, ri, s)][k] for k in (0, 1)]
                  for s in seeds])
    return seeds, d[:, 0], d[:, 1]


def test_paired_csv_matches_differences_computed_here(hand_sweep):
    root, metrics = hand_sweep
    rep = make_report(root, tsne="none", curves=False)
    rows = list(csv.DictReader(open(root / "report" / "paired.csv")))
    got = {(r["rates"], r["model"], r["reference"]): r for r in rows}
    n_expected = 0
    for backbone, variants in (("mmgcn", ("none", "balm", "balm-d")), ("late_fusion", ("none", "balm"))):
        for ri, rates in enumerate(RATES):
            for variant in variants:
                for ref in ("none", "balm"):
                    if variant == ref:
                        continue
                    model = backbone if variant == "none" else f"{backbone}+{variant}"
                    row = got[(_label(rates), model, ref)]
                    seeds, dacc, dwf1 = _expected(metrics, backbone, variant, ref, ri)
                    assert int(row["n"]) == len(seeds) and row["seeds"] == " ".join(map(str, seeds))
                    assert row["reference_model"] == (backbone if ref == "none" else f"{backbone}+balm")
                    assert float(row["acc_diff_mean"]) == pytest.approx(dacc.mean(), abs=1e-12)
                    assert float(row["acc_diff_std"]) == pytest.approx(dacc.std(ddof=1), abs=1e-12)
                    assert float(row["wf1_diff_mean"]) == pytest.approx(dwf1.mean(), abs=1e-12)
                    assert float(row["wf1_diff_std"]) == pytest.approx(dwf1.std(ddof=1), abs=1e-12)
                    n_expected += 1
    assert len(rows) == n_expected == 2 * (4 + 2)  # no self-pairs, no pairs across backbones
    assert [r["seeds"] for r in rows if r["model"] == "mmgcn+balm-d" and r["rates"] == _label(RATES[1])] == ["0 1", "0 1"]

    # wins: settings where the mean paired difference is > 0
    wins = {(r["model"], r["reference"]): r for r in csv.DictReader(open(root / "report" / "paired_wins.csv"))}
    for (model, ref), w in wins.items():
        backbone, _, variant = model.partition("+")
        variant = variant or "none"
        want = {k: sum(_expected(metrics, backbone, variant, ref, ri)[1 + k].mean() > 0 for ri in range(2)) for k in (0, 1)}
        assert (int(w["settings"]), int(w["wins_acc"]), int(w["wins_wf1"])) == (2, want[0], want[1])
    assert len(wins) == 6

    # the Markdown (report.md and the returned text) shows the same numbers in signed points
    md = (root / "report" / "report.md").read_text()
    seeds, dacc, dwf1 = _expected(metrics, "mmgcn", "balm", "none", 0)
    cell = f"{100 * dwf1.mean():+.2f} ± {100 * dwf1.std(ddof=1):.2f}"
    assert cell in md and cell in rep["paired"]
    assert "paired.csv" in md and "Paired test W-F1 difference against `balm`" in md
    w = wins[("mmgcn+balm-d", "none")]
    assert f"{w['wins_wf1']}/2" in rep["paired"]


def test_single_pair_has_zero_std_and_missing_reference_gives_no_cell(tmp_path):
    write_run(tmp_path, "a", {"method": "none", "rates": RATES[0], "seed": 0}, 0.50, 0.40)
    write_run(tmp_path, "b", {"method": "fcm-only", "rates": RATES[0], "seed": 0}, 0.45, 0.46)
    write_run(tmp_path, "c", {"method": "fcm-only", "rates": RATES[0], "seed": 1}, 0.60, 0.60)  # no none at seed 1
    t = build_paired(load_results(tmp_path))
    assert t.references == ["none"]  # no balm run: only one reference
    cells = list(t.cells.values())
    assert len(cells) == 1
    c = cells[0]
    assert c["n"] == 1 and c["seeds"] == [0]
    assert c["acc"] == pytest.approx((-0.05, 0.0)) and c["wf1"] == pytest.approx((0.06, 0.0))
    assert t.wins[("late_fusion+fcm-only", "none")] == {"settings": 1, "acc": 0, "wf1": 1}


@pytest.fixture(scope="module")
def case_sweep(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cases")
    sweep = expand({**base_config(tiny_data, epochs=1, tsne_samples=0, checkpoint=False),
                    "sweep": {"cases": {"none": {"method": "none"}, "balm": {"method": "balm"},
                                        "balm-raw": {"method": "balm", "coefficients": "raw"}},
                              "seed": [0, 1]}})
    run_sweep(sweep, out, workers=2)
    return out, sweep


def test_case_sweep_report_columns_are_cases_and_pairs_match(case_sweep, capsys):
    out, sweep = case_sweep
    assert main(["report", str(out), "--tsne", "none", "--no-curves"]) == 0
    printed = capsys.readouterr().out
    assert "Paired test W-F1 difference against `none`" in printed
    table = list(csv.DictReader(open(out / "report" / "table.csv")))
    # 'coefficients' and 'variant' are set by the cases: columns, not settings (a single row)
    assert [r["model"] for r in table] == ["late_fusion", "late_fusion+balm", "late_fusion+balm-raw"]
    assert "coefficients" not in table[0] and "variant" not in table[0]
    test = {}
    for r in sweep.runs:
        res = json.loads((out / "runs" / r.id / "result.json").read_text())
        test[(r.setting["cases"], r.setting["seed"])] = res["test"]
    rows = {(r["model"], r["reference"]): r for r in csv.DictReader(open(out / "report" / "paired.csv"))}
    assert set(rows) == {("late_fusion+balm", "none"), ("late_fusion+balm-raw", "none"),
                         ("late_fusion", "balm"), ("late_fusion+balm-raw", "balm")}
    for case, model in (("balm-raw", "late_fusion+balm-raw"), ("balm", "late_fusion+balm")):
        d = np.array([test[(case, s)]["wf1"] - test[("none", s)]["wf1"] for s in (0, 1)])
        assert float(rows[(model, "none")]["wf1_diff_mean"]) == pytest.approx(d.mean(), abs=1e-12)
        assert float(rows[(model, "none")]["wf1_diff_std"]) == pytest.approx(d.std(ddof=1), abs=1e-12)
    d = np.array([test[("none", s)]["acc"] - test[("balm", s)]["acc"] for s in (0, 1)])
    assert float(rows[("late_fusion", "balm")]["acc_diff_mean"]) == pytest.approx(d.mean(), abs=1e-12)
    summary = list(csv.DictReader(open(out / "summary.csv")))
    assert sorted(r["case"] for r in summary) == ["balm", "balm", "balm-raw", "balm-raw", "none", "none"]


def test_against_pairs_across_backbones_by_setting_and_seed(hand_sweep):
    """--against mmgcn+balm: every other column, any backbone, against that column's run of the same
    setting and seed; per setting and pooled; ahead counts and ttest_rel p from SciPy."""
    from scipy.stats import ttest_rel

    from balm.reporting.paired import against_csv, build_against

    root, metrics = hand_sweep
    runs = load_results(root)
    t = build_against(runs, "mmgcn+balm")
    assert t.reference == "mmgcn+balm" and "mmgcn+balm" not in t.models
    assert set(t.models) == {"mmgcn", "mmgcn+balm-d", "late_fusion", "late_fusion+balm"}
    pooled = []
    for ri, rates in enumerate(RATES):
        s = (_label(rates),)
        seeds = [k for k in range(3) if ("late_fusion", "none", ri, k) in metrics]
        d = [metrics[("late_fusion", "none", ri, k)][1] - metrics[("mmgcn", "balm", ri, k)][1] for k in seeds]
        pooled += d
        c = t.cells[(s, "late_fusion")]["wf1"]
        assert c["mean"] == pytest.approx(np.mean(d)) and c["std"] == pytest.approx(np.std(d, ddof=1))
        assert c["ahead"] == sum(x > 0 for x in d) and c["n"] == 3
        mine = [metrics[("late_fusion", "none", ri, k)][1] for k in seeds]
        ref = [metrics[("mmgcn", "balm", ri, k)][1] for k in seeds]
        assert c["p"] == pytest.approx(ttest_rel(mine, ref).pvalue)
    assert t.overall["late_fusion"]["wf1"]["mean"] == pytest.approx(np.mean(pooled))
    assert t.overall["late_fusion"]["wf1"]["n"] == 6
    # balm-d lacks seed 2 at the second setting: paired on seeds 0 and 1 there
    assert t.cells[((_label(RATES[1]),), "mmgcn+balm-d")]["seeds"] == [0, 1]
    rows = list(csv.DictReader(io.StringIO(against_csv(t))))
    assert {r["model"] for r in rows} == set(t.models) and sum(r["rates"] == "all" for r in rows) == 4
    with pytest.raises(ValueError, match="no such column.*mmgcn\\+balm-d"):
        build_against(runs, "mmgcn+nope")


def test_report_against_writes_its_section_and_csv(hand_sweep):
    root, _ = hand_sweep
    rep = make_report(root, tsne="none", curves=False, against="late_fusion")
    text = rep["markdown"].read_text()
    assert "## Paired against `late_fusion`" in text and (rep["dir"] / "against.csv").is_file()
    assert "**all settings**" in rep["against"]


def test_a_case_that_names_its_backbone_is_its_own_label(tmp_path):
    from balm.reporting.tables import RunResult

    cfg = {"backbone": "mmgcn", "method": "balm"}
    assert RunResult("r", tmp_path, {"config": cfg}, case="mmgcn+balm").model == "mmgcn+balm"
    assert RunResult("r", tmp_path, {"config": {"backbone": "gcnet", "method": "none"}}, case="gcnet").model == "gcnet"
    assert RunResult("r", tmp_path, {"config": cfg}, case="ogm-ge").model == "mmgcn+ogm-ge"
    assert RunResult("r", tmp_path, {"config": cfg}).model == "mmgcn+balm"
