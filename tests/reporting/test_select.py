"""`balm report --select dev`: the grid point with the best mean dev W-F1 wins, computed here from
hand-written result files; test scores never change the choice; paired t-test against SciPy's."""

import csv
import json

import numpy as np
import pytest
from scipy.stats import ttest_rel

from balm.cli.main import main
from balm.experiments.config import Config
from balm.reporting.select import choose, select_dev
from balm.reporting.tables import load_results

RATES = ({"audio": 0.5, "text": 0.7, "visual": 0.3}, 0.0)
# (case name, method, grid point overrides)
CASES = [("none", "none", {})]
CASES += [(f"balm@t{t}r{r}", "balm", {"tau": t, "rho": r}) for t in (0.1, 0.4) for r in (1.2, 1.6)]
CASES += [(f"ogm-ge@a{a}", "ogm-ge", {"method_options": {"alpha": a}}) for a in (0.1, 0.5)]
SEEDS = range(5)


def _write_run(root, run_id, cfg, dev, test):
    config = Config.from_dict({"data": "synthetic:iemocap", **cfg}).to_dict()
    res = {"schema": "balm-result/1", "status": "finished", "task": "classification",
           "test": {"acc": test - 0.01, "wf1": test, "n": 100}, "dev": {"acc": dev - 0.01, "wf1": dev, "n": 10},
           "best_epoch": 0, "epochs_run": 1, "train_seconds": 1.0,
           "dataset": {"used_modalities": ["audio", "text", "visual"], "label_names": ["a", "b"]},
           "requested_rates": cfg["rates"] if isinstance(cfg["rates"], dict) else
           {m: cfg["rates"] for m in ("audio", "text", "visual")}, "realised_rates": {},
           "config": config}
    d = root / "runs" / run_id
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(res))


def _sweep(root, dev, test):
    """Every case x rate setting x seed, scores from ``dev`` / ``test`` keyed (case, rate index, seed),
    with a sweep.json plan naming the cases as `balm sweep` writes it."""
    plan = {"runs": [], "cases": {}}
    for ri, rates in enumerate(RATES):
        for name, method, over in CASES:
            plan["cases"][name] = {"method": method, **over}
            for seed in SEEDS:
                run_id = f"{name.replace('@', '_')}-{ri}-{seed}"
                _write_run(root, run_id, {"method": method, "rates": rates, "seed": seed, **over},
                           dev[(name, ri, seed)], test[(name, ri, seed)])
                plan["runs"].append({"id": run_id, "setting": {"rates": rates, "cases": name, "seed": seed}})
    (root / "sweep.json").write_text(json.dumps(plan))
    return root


def _scores(seed):
    rng = np.random.default_rng(seed)
    return {(name, ri, s): float(rng.uniform(0.4, 0.9)) for name, _, _ in CASES for ri in range(2) for s in SEEDS}


def _expected_winner(dev, form, ri):
    """The case of ``form`` with the best mean dev score over the seeds, computed with a plain loop."""
    best, best_mean = None, -1.0
    for name, _, _ in CASES:
        if name.split("@")[0] != form:
            continue
        m = sum(dev[(name, ri, s)] for s in SEEDS) / len(SEEDS)
        if m > best_mean:
            best, best_mean = name, m
    return best


def _cell(sel, ri, column):
    return sel.cells[(sel.rows[ri], column)]


def _point_of(case):
    over = next(o for n, _, o in CASES if n == case)
    return over.get("tau", 0.3), over.get("rho", 1.4), over.get("method_options", {}).get("alpha")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_grid_point_with_the_best_mean_dev_wins(tmp_path, seed):
    dev, test = _scores(seed), _scores(100 + seed)
    sel = select_dev(load_results(_sweep(tmp_path, dev, test)))
    assert sel.columns == ["late_fusion", "late_fusion+balm", "late_fusion+ogm-ge"]
    assert len(sel.rows) == 2
    for ri in range(2):
        for form, column in (("balm", "late_fusion+balm"), ("ogm-ge", "late_fusion+ogm-ge")):
            c = _cell(sel, ri, column)
            won = _expected_winner(dev, form, ri)
            point = c["point"]
            assert (point["tau"], point["rho"], point.get("method_options.alpha")) == _point_of(won)
            assert c["points"] == (4 if form == "balm" else 2) and c["n"] == 5
            t = [test[(won, ri, s)] for s in SEEDS]
            assert c["test"]["wf1"][0] == pytest.approx(np.mean(t))
            assert c["test"]["wf1"][1] == pytest.approx(np.std(t, ddof=1))
            ref = [test[("none", ri, s)] for s in SEEDS]
            p = c["paired"]
            assert p["mean"] == pytest.approx(np.mean(np.subtract(t, ref)))
            assert p["ahead"] == sum(a > b for a, b in zip(t, ref)) and p["n"] == 5
            assert p["p"] == pytest.approx(ttest_rel(t, ref).pvalue)
        assert _cell(sel, ri, "late_fusion")["paired"] is None


def test_test_scores_never_change_the_choice(tmp_path):
    dev = _scores(3)
    chosen = None
    for k in range(4):
        test = _scores(200 + k)
        if k == 3:  # the losing points get the best test scores of all
            test = {key: (1.0 if key[0] not in ("balm@t0.1r1.2",) else 0.0) for key in test}
        sel = select_dev(load_results(_sweep(tmp_path / str(k), dev, test)))
        got = {(r, c): json.dumps(v["point"], sort_keys=True) for (r, c), v in sel.cells.items()}
        chosen = chosen or got
        assert got == chosen


def test_a_dev_change_moves_the_choice(tmp_path):
    dev, test = _scores(4), _scores(5)
    for s in SEEDS:  # make one balm point the clear dev winner in the first setting
        dev[("balm@t0.4r1.6", 0, s)] = 0.95
    sel = select_dev(load_results(_sweep(tmp_path, dev, test)))
    assert _cell(sel, 0, "late_fusion+balm")["point"]["tau"] == 0.4
    assert _cell(sel, 0, "late_fusion+balm")["point"]["rho"] == 1.6


def test_choose_ties_go_to_the_first_and_empty_points_are_skipped():
    assert choose([[0.5, 0.7], [], [0.6, 0.6], [0.7]]) == 3
    assert choose([[0.6], [0.5, 0.7]]) == 0
    with pytest.raises(ValueError):
        choose([[], []])


def test_axes_without_cases_select_over_tau_and_numeric_method_options(tmp_path):
    """A plain sweep (tau axis, method axis): the grid is tau; the rows do not split by tau."""
    rng = np.random.default_rng(9)
    dev = {}
    for method in ("none", "balm"):
        for tau in (0.1, 0.4):
            for seed in range(3):
                dev[(method, tau, seed)] = float(rng.uniform(0.4, 0.9))
                _write_run(tmp_path, f"{method}-{tau}-{seed}",
                           {"method": method, "rates": 0.0, "seed": seed, "tau": tau}, dev[(method, tau, seed)], 0.5)
    sel = select_dev(load_results(tmp_path))
    assert sel.keys == [] and len(sel.rows) == 1
    best = max((0.1, 0.4), key=lambda t: np.mean([dev[("balm", t, s)] for s in range(3)]))
    assert sel.cells[(sel.rows[0], "late_fusion+balm")]["point"]["tau"] == best


def test_cli_writes_the_selection(tmp_path, capsys):
    dev, test = _scores(6), _scores(7)
    root = _sweep(tmp_path, dev, test)
    assert main(["report", str(root), "--select", "dev"]) == 0
    text = capsys.readouterr().out
    assert "best mean dev W-F1" in text and "paired t-test" in text
    rows = list(csv.DictReader(open(root / "report" / "select-dev.csv")))
    assert len(rows) == 2 * 3 + 2  # every cell, then the pooled rows of the two methods
    won = _expected_winner(dev, "balm", 1)
    row = next(r for r in rows if r["column"] == "late_fusion+balm" and r["rates"] == "(0, 0, 0)")
    assert json.loads(row["point"])["tau"] == _point_of(won)[0]
    assert (root / "report" / "select-dev.md").is_file()
    assert main(["report", str(tmp_path / "empty"), "--select", "dev"]) == 2


def test_the_pooled_row_pairs_every_setting_and_seed(tmp_path):
    from balm.reporting.select import pooled, to_csv, to_markdown

    dev, test = _scores(6), _scores(7)
    sel = select_dev(load_results(_sweep(tmp_path, dev, test)))
    pool = pooled(sel)
    assert pool["late_fusion"] is None  # the reference has no pairs
    for form, column in (("balm", "late_fusion+balm"), ("ogm-ge", "late_fusion+ogm-ge")):
        # by hand: each setting's dev winner against that setting's none, 2 settings x 5 seeds
        a = [test[(_expected_winner(dev, form, ri), ri, s)] for ri in range(2) for s in SEEDS]
        b = [test[("none", ri, s)] for ri in range(2) for s in SEEDS]
        p = pool[column]
        assert p["n"] == 10
        assert p["mean"] == pytest.approx(np.mean(np.subtract(a, b)))
        assert p["std"] == pytest.approx(np.std(np.subtract(a, b), ddof=1))
        assert p["ahead"] == sum(x > y for x, y in zip(a, b))
        assert p["p"] == pytest.approx(ttest_rel(a, b).pvalue)
    md = to_markdown(sel)
    line = next(x for x in md.splitlines() if x.startswith("| all settings, pooled"))
    assert f"{100 * pool['late_fusion+balm']['mean']:+.2f}" in line and "/10," in line
    rows = [r for r in csv.DictReader(to_csv(sel).splitlines()) if r["rates"] == "all"]
    assert {r["column"] for r in rows} == {"late_fusion+balm", "late_fusion+ogm-ge"}
    assert float(next(r for r in rows if r["column"] == "late_fusion+balm")["diff_mean"]) == pytest.approx(
        pool["late_fusion+balm"]["mean"])


def test_regression_runs_report_mae_and_corr_at_the_chosen_point(tmp_path):
    from balm.reporting.select import to_markdown

    dev, test = _scores(8), _scores(9)
    root = _sweep(tmp_path, dev, test)
    rng = np.random.default_rng(10)
    mae = {}
    for f in sorted((root / "runs").glob("*/result.json")):
        res = json.loads(f.read_text())
        mae[f.parent.name] = float(rng.uniform(0.8, 1.2))
        res["test"].update(mae=mae[f.parent.name], corr=1.0 - mae[f.parent.name] / 2)
        f.write_text(json.dumps(res))
    sel = select_dev(load_results(root))
    won = _expected_winner(dev, "balm", 0)
    want = [mae[f"{won.replace('@', '_')}-0-{s}"] for s in SEEDS]  # the dev-chosen point's runs
    c = _cell(sel, 0, "late_fusion+balm")
    assert c["test"]["mae"][0] == pytest.approx(np.mean(want))
    assert c["test"]["corr"][0] == pytest.approx(1.0 - np.mean(want) / 2)
    line = next(x for x in to_markdown(sel).split("### Regression")[1].splitlines() if x.startswith("| (0.5"))
    assert f"MAE {np.mean(want):.3f} ± {np.std(want, ddof=1):.3f}" in line
