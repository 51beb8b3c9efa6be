"""Hyper-parameters chosen on dev, as a user would: ``balm report DIR --select dev``.

A sweep carries a grid of hyper-parameters per method: the keys ``tau`` and ``rho`` and every
numeric entry of ``method_options`` (``alpha`` of OGM-GE, ``magnitude`` / ``lam`` of CGGM,
``mu_floor``, …) are *grid keys*. The other keys that vary make the table: the column is the
method (backbone + method, or backbone + case name in a sweep with cases; a case named
``FORM@POINT`` belongs to column ``FORM``, so one form's grid points can be written as cases), and
the row is the setting (the varying keys that are neither grid, column nor seed keys). In each
cell the runs are grouped by grid point, and the point with the best mean dev W-F1 over its
seeds wins (ties: the first in the sweep's order)::

    g* = argmax_g  mean_{s ∈ seeds(g)} devWF1(g, s)

Only the dev scores reach :func:`choose`; the test scores of the winning point are reported
(mean ± std over seeds), with the paired differences against ``none`` of the same backbone and
row (mean ± std of test W-F1 − none's, seeds ahead, the paired t-test p-value,
``scipy.stats.ttest_rel``). With more than one row, :func:`pooled` adds a row of the differences
pooled over every setting (each setting's winner against that setting's ``none``, one pair per
setting and seed).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .tables import RunResult, format_value, load_results, mean_std, setting_keys

GRID_TOP_KEYS = ("tau", "rho")
POINT_SEP = "@"
REFERENCE = "none"
REGRESSION = ("mae", "corr")  # regression runs: reported at the chosen point beside W-F1 of the sign


def grid_point(config: dict) -> dict[str, Any]:
    """The run's grid values: ``tau``, ``rho`` and each numeric ``method_options.<k>``."""
    point = {k: config.get(k) for k in GRID_TOP_KEYS}
    for k, v in sorted((config.get("method_options") or {}).items()):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            point[f"method_options.{k}"] = v
    return point


def _form_options(config: dict) -> dict:
    """``method_options`` without its grid entries (the options that make a form, e.g. modulate)."""
    grid = grid_point(config)
    return {k: v for k, v in (config.get("method_options") or {}).items() if f"method_options.{k}" not in grid}


def column_of(run: RunResult) -> str:
    """Column label: ``backbone`` for none, else ``backbone+<method or case name before '@'>``."""
    name = run.case.split(POINT_SEP)[0] if run.case is not None else run.config["method"]
    return run.config["backbone"] if name == REFERENCE else f"{run.config['backbone']}+{name}"


def _is_reference(run: RunResult) -> bool:
    name = run.case.split(POINT_SEP)[0] if run.case is not None else run.config["method"]
    return name == REFERENCE


def row_keys(runs: list[RunResult]) -> list[str]:
    """The setting keys of :func:`balm.reporting.tables.setting_keys` without the grid keys."""
    keys = [k for k in setting_keys(runs) if k not in GRID_TOP_KEYS]
    if "method_options" in keys and len({json.dumps(_form_options(r.config), sort_keys=True) for r in runs}) == 1:
        keys.remove("method_options")  # it varied in grid entries only
    return keys


def _row_label(run: RunResult, keys: list[str]) -> tuple[str, ...]:
    return tuple(json.dumps(_form_options(run.config), sort_keys=True) if k == "method_options"
                 else format_value(k, run.config.get(k), run) for k in keys)


def choose(dev_scores: Sequence[Sequence[float]]) -> int:
    """Index of the grid point with the highest mean dev score (the first on ties); one list of
    per-seed dev scores per point. Nothing else is given to it: test scores cannot steer the choice."""
    best, best_mean = -1, -math.inf
    for i, scores in enumerate(dev_scores):
        if not scores:
            continue
        m = sum(scores) / len(scores)
        if m > best_mean:
            best, best_mean = i, m
    if best < 0:
        raise ValueError("no grid point has a dev score")
    return best


def _seed(run: RunResult) -> tuple:
    return run.config.get("seed"), run.config.get("mask_seed")


@dataclass
class Selection:
    keys: list[str]  # row keys
    rows: list[tuple[str, ...]]
    columns: list[str]
    # (row, column) -> {"point": {key: value}, "points": n grid points, "varied": grid keys that differ between
    #   them, "dev": mean dev metric of the winner,
    #   "test": {"acc": (mean, std), "wf1": (mean, std)}, "seeds": {seed: test wf1}, "n": runs,
    #   "paired": None | {"mean", "std", "ahead", "n", "p"} against none}
    cells: dict
    metric: str


def select_dev(runs: list[RunResult], metric: str = "wf1") -> Selection:
    """Per row and column, the grid point with the best mean dev ``metric``; its test scores."""
    keys = row_keys(runs)
    rows, columns, groups = [], [], {}
    for r in runs:
        row, col = _row_label(r, keys), column_of(r)
        if row not in rows:
            rows.append(row)
        if col not in columns:
            columns.append(col)
        point = json.dumps(grid_point(r.config), sort_keys=True)
        groups.setdefault((row, col), {}).setdefault(point, []).append(r)
    cells = {}
    for (row, col), by_point in groups.items():
        points = list(by_point)
        won = points[choose([[r.result["dev"][metric] for r in by_point[p]] for p in points])]
        chosen = by_point[won]
        varied = sorted({k for p in points for k, v in json.loads(p).items() if v != json.loads(won).get(k)})
        cells[(row, col)] = {
            "point": json.loads(won), "points": len(points), "varied": varied,
            "dev": sum(r.result["dev"][metric] for r in chosen) / len(chosen),
            "test": {m: mean_std([r.result["test"][m] for r in chosen]) for m in ("acc", metric, *REGRESSION)
                     if m in ("acc", metric) or all(m in r.result["test"] for r in chosen)},
            "seeds": {_seed(r): r.result["test"][metric] for r in chosen},  # for the paired differences
            "n": len(chosen), "reference": any(_is_reference(r) for r in chosen),
            "backbone": chosen[0].config["backbone"],
        }
    for (row, col), c in cells.items():
        ref = next((v for (rw, cl), v in cells.items() if rw == row and v["reference"] and v["backbone"] == c["backbone"]),
                   None)
        c["paired"] = None if ref is None or c["reference"] else paired(c["seeds"], ref["seeds"])
        c["reference_seeds"] = None if c["paired"] is None else ref["seeds"]
    return Selection(keys, rows, columns, cells, metric)


def pooled(sel: Selection) -> dict[str, dict | None]:
    """Per column, :func:`paired` over every (setting, seed) pair: each setting's dev-selected
    point against that setting's ``none``; None for a column without pairs."""
    out = {}
    for col in sel.columns:
        scores, reference = {}, {}
        for row in sel.rows:
            c = sel.cells.get((row, col))
            if c is None or c.get("reference_seeds") is None:
                continue
            for seed, v in c["seeds"].items():
                if seed in c["reference_seeds"]:
                    scores[(row, seed)], reference[(row, seed)] = v, c["reference_seeds"][seed]
        out[col] = paired(scores, reference) if scores else None
    return out


def paired(scores: dict, reference: dict) -> dict | None:
    """Paired differences over the seeds both have: mean, std (ddof=1), seeds ahead, t-test p."""
    common = [s for s in scores if s in reference]
    if not common:
        return None
    d = [scores[s] - reference[s] for s in common]
    mean, std = mean_std(d)
    p = math.nan
    if len(d) > 1 and any(x != d[0] for x in d):
        from scipy.stats import ttest_rel

        p = float(ttest_rel([scores[s] for s in common], [reference[s] for s in common]).pvalue)
    return {"mean": mean, "std": std, "ahead": sum(x > 0 for x in d), "n": len(d), "p": p}


def _point_label(point: dict, varied: list[str]) -> str:
    shown = {k.replace("method_options.", ""): point.get(k) for k in varied}
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())


def _paired_text(p: dict | None) -> str:
    return "–" if p is None else f"{100 * p['mean']:+.2f} ± {100 * p['std']:.2f}, {p['ahead']}/{p['n']}, p {p['p']:.2g}"


def to_markdown(sel: Selection) -> str:
    """Test scores of the dev-selected grid points, then the paired differences against none."""
    varied = sorted({k for c in sel.cells.values() for k in c["varied"]})
    head = sel.keys or ["setting"]
    m = "W-F1" if sel.metric == "wf1" else sel.metric
    out = [f"### Test {m} (%) at the grid point with the best mean dev {m}, mean ± std over seeds\n",
           "| " + " | ".join(head + sel.columns) + " |", "|" + "---|" * (len(head) + len(sel.columns))]
    for row in sel.rows:
        cells = list(row) if sel.keys else ["all"]
        for col in sel.columns:
            c = sel.cells.get((row, col))
            if c is None:
                cells.append("–")
                continue
            mean, std = c["test"][sel.metric]
            label = _point_label(c["point"], c["varied"])
            cells.append(f"{100 * mean:.2f} ± {100 * std:.2f}" + (f" ({label})" if label else ""))
        out.append("| " + " | ".join(cells) + " |")
    if any(c["paired"] for c in sel.cells.values()):
        out += ["", f"### Paired test {m} difference against `none` (points): mean ± std, seeds ahead, "
                "paired t-test p\n", "| " + " | ".join(head + sel.columns) + " |",
                "|" + "---|" * (len(head) + len(sel.columns))]
        for row in sel.rows:
            cells = list(row) if sel.keys else ["all"]
            for col in sel.columns:
                c = sel.cells.get((row, col))
                p = None if c is None else c["paired"]
                cells.append(_paired_text(p))
            out.append("| " + " | ".join(cells) + " |")
        if len(sel.rows) > 1:
            pool = pooled(sel)
            cells = ["all settings, pooled"] + [""] * (len(head) - 1)
            out.append("| " + " | ".join(cells + [_paired_text(pool[col]) for col in sel.columns]) + " |")
    if any("mae" in c["test"] for c in sel.cells.values()):
        out += ["", "### Regression: test MAE and Pearson correlation at the same points, mean ± std over seeds\n",
                "| " + " | ".join(head + sel.columns) + " |", "|" + "---|" * (len(head) + len(sel.columns))]
        for row in sel.rows:
            cells = list(row) if sel.keys else ["all"]
            for col in sel.columns:
                t = (sel.cells.get((row, col)) or {}).get("test", {})
                cells.append("–" if "mae" not in t else
                             f"MAE {t['mae'][0]:.3f} ± {t['mae'][1]:.3f}, Corr {t['corr'][0]:.3f} ± {t['corr'][1]:.3f}")
            out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("Grid keys: " + (", ".join(sorted(varied)) if varied else "none varied") +
               "; the winner of each cell is chosen on dev only (docs/experiments.md, `--select dev`).")
    return "\n".join(out) + "\n"


def to_csv(sel: Selection) -> str:
    """Long format (fractions): row keys, column, chosen grid point (JSON), grid points, runs, dev metric,
    test acc / metric mean and std, paired difference against none (mean, std, ahead, n, p); with
    several rows, then one row per column of the differences pooled over them (row keys ``all``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(sel.keys + ["column", "point", "points", "n", f"dev_{sel.metric}", "test_acc_mean", "test_acc_std",
                           f"test_{sel.metric}_mean", f"test_{sel.metric}_std", "diff_mean", "diff_std", "ahead",
                           "pairs", "p"])
    for row in sel.rows:
        for col in sel.columns:
            c = sel.cells.get((row, col))
            if c is None:
                continue
            p = c["paired"] or {}
            w.writerow(list(row) + [col, json.dumps(c["point"], sort_keys=True), c["points"], c["n"], c["dev"],
                                    *c["test"]["acc"], *c["test"][sel.metric], p.get("mean", ""), p.get("std", ""),
                                    p.get("ahead", ""), p.get("n", ""), p.get("p", "")])
    if len(sel.rows) > 1:  # the pooled differences: row keys "all", no point or test scores of their own
        for col, p in pooled(sel).items():
            if p is not None:
                w.writerow(["all"] * len(sel.keys) + [col, "", "", p["n"], "", "", "", "", "", p["mean"], p["std"],
                                                       p["ahead"], p["n"], p["p"]])
    return buf.getvalue()


def write_selection(sweep_dir: str | Path, metric: str = "wf1") -> dict:
    """Select on dev for the sweep in ``sweep_dir``; write ``report/select-dev.md`` and ``.csv``."""
    from balm.io import atomic_write_text

    runs = load_results(sweep_dir)
    if not runs:
        raise FileNotFoundError(f"no finished runs under {sweep_dir}")
    sel = select_dev(runs, metric)
    out = Path(sweep_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    md = to_markdown(sel)
    atomic_write_text(out / "select-dev.md", md)
    atomic_write_text(out / "select-dev.csv", to_csv(sel))
    return {"selection": sel, "markdown": md, "path": out / "select-dev.md"}
