"""`balm report`'s "which method leads" section: rankings, leaders, margins and seed counts,
recomputed here from hand-made result files, and average ranks against SciPy."""

import csv

import numpy as np
import pytest
from scipy.stats import rankdata

from balm.reporting.leaders import average_ranks, build_leaders
from balm.reporting.report import make_report
from balm.reporting.tables import load_results
from report_helpers import write_run

RATES = ({"audio": 0.5, "text": 0.7, "visual": 0.3}, {"audio": 0.3, "text": 0.5, "visual": 0.7})
LABELS = ("(0.5, 0.7, 0.3)", "(0.3, 0.5, 0.7)")
BACKBONES = (("mmgcn", ("none", "balm", "cggm")), ("late_fusion", ("none", "balm")))


def _model(backbone, variant):
    return backbone if variant == "none" else f"{backbone}+{variant}"


@pytest.mark.parametrize("seed", range(20))
def test_average_ranks_equal_scipy_descending_average_ranks(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=int(rng.integers(1, 12))).astype(float)  # many ties
    assert average_ranks(list(x)) == pytest.approx(list(rankdata(-x, method="average")))


@pytest.fixture()
def sweep(tmp_path):
    rng = np.random.default_rng(3)
    metrics = {}
    for backbone, variants in BACKBONES:
        for ri, rates in enumerate(RATES):
            for variant in variants:
                for seed in range(3):
                    acc, wf1 = (float(v) for v in rng.uniform(0.3, 0.7, 2))
                    metrics[(backbone, variant, ri, seed)] = {"acc": acc, "wf1": wf1}
                    write_run(tmp_path, f"{backbone}-{variant}-{ri}-{seed}",
                              {"backbone": backbone, "method": variant, "rates": rates, "seed": seed}, acc, wf1)
    return tmp_path, metrics


def test_leaders_match_rankings_computed_here(sweep):
    root, metrics = sweep
    lead = build_leaders(load_results(root))
    # no sweep.json: runs are read in folder-name order
    assert lead.backbones == ["late_fusion", "mmgcn"] and sorted(lead.settings) == sorted((s,) for s in LABELS)
    for backbone, variants in BACKBONES:
        for metric in ("acc", "wf1"):
            led = {v: 0 for v in variants}
            rank_sum = {v: 0.0 for v in variants}
            for ri in range(2):
                means = {v: np.mean([metrics[(backbone, v, ri, s)][metric] for s in range(3)]) for v in variants}
                order = sorted(variants, key=lambda v: -means[v])
                row = lead.rows[(backbone, (LABELS[ri],), metric)]
                assert [m for m, _, _ in row["ranking"]] == [_model(backbone, v) for v in order]
                assert [r for _, _, r in row["ranking"]] == [1.0, 2.0, 3.0][:len(variants)]
                first, second = order[0], order[1]
                assert row["leader"] == _model(backbone, first) and row["runner_up"] == _model(backbone, second)
                assert row["margin"] == pytest.approx(means[first] - means[second], abs=1e-12)
                ahead = sum(metrics[(backbone, first, ri, s)][metric] > metrics[(backbone, second, ri, s)][metric]
                            for s in range(3))
                assert row["ahead"] == (ahead, 3)
                led[first] += 1
                for i, v in enumerate(order):
                    rank_sum[v] += i + 1
            for v in variants:
                e = lead.summary[(backbone, _model(backbone, v), metric)]
                assert e == {"mean_rank": pytest.approx(rank_sum[v] / 2), "led": led[v], "settings": 2}


def test_report_writes_leaders_section_and_csv(sweep):
    root, metrics = sweep
    rep = make_report(root, tsne="none", curves=False)
    md = (root / "report" / "report.md").read_text()
    assert "## Which method leads" in md and rep["leaders"] in md
    assert "rank of `mmgcn+balm` (of 3)" in md and "rank of `late_fusion+balm` (of 2)" in md
    rows = list(csv.DictReader(open(root / "report" / "leaders.csv")))
    assert len(rows) == 2 * 2 * (3 + 2)  # settings x metrics x columns of both backbones
    for r in rows:
        backbone = r["backbone"]
        variant = r["model"].partition("+")[2] or "none"
        ri = LABELS.index(r["rates"])
        want = np.mean([metrics[(backbone, variant, ri, s)][r["metric"]] for s in range(3)])
        assert float(r["mean"]) == pytest.approx(want, abs=1e-12)
    # the leader's cell shows its mean in percent
    row = build_leaders(load_results(root)).rows[("mmgcn", (LABELS[0],), "wf1")]
    assert f"| {LABELS[0]} | {row['leader']} {100 * row['ranking'][0][1]:.2f} |" in md


def test_tie_for_the_top_goes_to_the_first_column_and_seed_count_pairs_seeds(tmp_path):
    # none and balm tie on mean W-F1 (0.5); balm is ahead on seed 1 only; cggm lags
    runs = {("none", 0): 0.6, ("none", 1): 0.4, ("balm", 0): 0.45, ("balm", 1): 0.55, ("cggm", 0): 0.3, ("cggm", 1): 0.3}
    for i, ((variant, seed), wf1) in enumerate(runs.items()):  # folder names keep this order
        write_run(tmp_path, f"{i}-{variant}-{seed}", {"backbone": "mmgcn", "method": variant, "rates": RATES[0], "seed": seed},
                  0.5, wf1)
    lead = build_leaders(load_results(tmp_path))
    key = next(k for k in lead.rows if k[2] == "wf1")
    row = lead.rows[key]
    assert row["leader"] == "mmgcn" and row["runner_up"] == "mmgcn+balm"
    assert [r for _, _, r in row["ranking"]] == [1.5, 1.5, 3.0]
    assert row["margin"] == pytest.approx(0.0, abs=1e-12) and row["ahead"] == (1, 2)
    # every column ties on accuracy: all share rank 2, the first column leads
    acc = lead.rows[(key[0], key[1], "acc")]
    assert [r for _, _, r in acc["ranking"]] == [2.0, 2.0, 2.0] and acc["leader"] == "mmgcn"


def test_a_backbone_with_one_column_gets_no_leader_table(tmp_path):
    from balm.reporting.leaders import to_markdown

    for i, (backbone, variant, seed) in enumerate([("mmgcn", "none", 0), ("mmgcn", "balm", 0), ("gcnet", "none", 0)]):
        write_run(tmp_path, f"{i}-{backbone}-{variant}", {"backbone": backbone, "method": variant, "rates": RATES[0],
                                                          "seed": seed}, 0.5, 0.4 + 0.1 * i)
    md = to_markdown(build_leaders(load_results(tmp_path)))
    assert "Leader per setting: `mmgcn`" in md and "`gcnet`" not in md
