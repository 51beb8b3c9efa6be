"""Tables of a sweep: mean ± std over seeds, rows = settings, columns = backbone + method.

The setting of a run is the set of config keys that vary across the sweep's runs, except the
model (``backbone``, ``method``) and the seeds (``seed``, ``mask_seed``). In a sweep with a
``cases`` axis the column is backbone + case name instead, and the keys the cases set are part
of the column, not of the setting (a ``method`` axis crossed with cases stays a setting key).
Means and standard deviations are over the runs sharing model and setting (normally the seeds);
the standard deviation is the sample one (``ddof=1``), 0 for a single run.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MODEL_KEYS = ("backbone", "method")
SEED_KEYS = ("seed", "mask_seed")
LETTERS = {"audio": "A", "visual": "V", "text": "L"}


@dataclass
class RunResult:
    run_id: str
    path: Path
    result: dict
    case: str | None = None  # the run's case name in a sweep with a ``cases`` axis
    case_keys: frozenset = field(default_factory=frozenset)  # top-level keys set by any case of its sweep

    @property
    def config(self) -> dict:
        return self.result["config"]

    @property
    def column(self) -> str:
        """The case name, or the method outside case sweeps (``none`` and ``balm`` are the references)."""
        return self.case if self.case is not None else self.config["method"]

    @property
    def model(self) -> str:
        """Column label: ``backbone`` for ``none``, else ``backbone+<method or case>``; a case whose
        name already names its backbone (``mmgcn+balm`` or ``gcnet`` with backbone ``mmgcn`` / ``gcnet``)
        is its own label."""
        c, col = self.config, self.column
        if col == "none":
            return c["backbone"]
        if self.case is not None and (col == c["backbone"] or col.startswith(c["backbone"] + "+")):
            return col
        return f"{c['backbone']}+{col}"


def load_results(sweep_dir: str | Path) -> list[RunResult]:
    """Every finished run of the sweep's plan (``sweep.json``) under ``sweep_dir/runs``, in the plan's
    order (a single run folder also works; without a plan, every run folder, by id). Folders outside
    the plan, left by an earlier version of the sweep config, are left out."""
    from balm.experiments.rundir import plan_cases, plan_run_dirs, plan_run_ids, read_plan, read_result

    root = Path(sweep_dir)
    dirs = plan_run_dirs(root)[0] if (root / "runs").is_dir() else [root]
    raw = read_plan(root)
    ids = plan_run_ids(raw) if raw is not None else None
    plan = {run_id: i for i, run_id in enumerate(ids or [])}
    dirs.sort(key=lambda d: (plan.get(d.name, len(plan)), d.name))
    case_of, cases = plan_cases(root)
    case_keys = frozenset(str(k).split(".")[0] for o in cases.values() if isinstance(o, dict) for k in o)
    out = []
    for d in dirs:
        res = read_result(d)
        if res is not None:
            case = case_of.get(d.name)
            out.append(RunResult(d.name, d, res, case, case_keys if case is not None else frozenset()))
    return out


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True)


def setting_keys(runs: list[RunResult]) -> list[str]:
    """Config keys whose values differ across runs, in config order, except the seed keys and the
    column's keys: ``backbone`` and ``method``, or with cases ``backbone`` and the keys the cases set."""
    if not runs:
        return []
    keys = list(runs[0].config)
    if any(r.case is not None for r in runs):
        column_keys = {"backbone"}.union(*(r.case_keys for r in runs))
    else:
        column_keys = set(MODEL_KEYS)
    out = []
    for k in keys:
        if k in column_keys or k in SEED_KEYS:
            continue
        if len({_canon(r.config.get(k)) for r in runs}) > 1:
            out.append(k)
    return out


def format_value(key: str, value: Any, run: RunResult | None = None) -> str:
    """Compact label: rates as ``(r_1, r_2, ...)`` in dataset order, modalities as letters."""
    if key == "rates" and run is not None:
        req = run.result.get("requested_rates")
        if req is None:
            return "stored"
        return "(" + ", ".join(f"{v:g}" for v in req.values()) + ")"
    if key == "modalities" and run is not None:
        used = run.result["dataset"]["used_modalities"]
        if all(m in LETTERS for m in used):
            return "".join(LETTERS[m] for m in used)
        return "+".join(used)
    if key == "data" and isinstance(value, str):
        return value.split(":")[-1].rstrip("/").split("/")[-1]
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def setting_label(run: RunResult, keys: list[str]) -> tuple[str, ...]:
    return tuple(format_value(k, run.config.get(k), run) for k in keys)


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


@dataclass
class Table:
    keys: list[str]  # setting keys (row label columns)
    settings: list[tuple[str, ...]]  # row labels, in first-seen order
    models: list[str]  # columns, in first-seen order
    cells: dict  # (setting, model) -> {"acc": (mean, std), "wf1": (mean, std), "n": int, "runs": [ids]}


def build_table(runs: list[RunResult]) -> Table:
    keys = setting_keys(runs)
    settings, models, groups = [], [], {}
    for r in runs:
        s, m = setting_label(r, keys), r.model
        if s not in settings:
            settings.append(s)
        if m not in models:
            models.append(m)
        groups.setdefault((s, m), []).append(r)
    cells = {}
    for (s, m), rs in groups.items():
        cells[(s, m)] = {
            "acc": mean_std([r.result["test"]["acc"] for r in rs]),
            "wf1": mean_std([r.result["test"]["wf1"] for r in rs]),
            "n": len(rs),
            "runs": [r.run_id for r in rs],
        }
        for k, _title, _pct in REGRESSION_METRICS:  # regression runs: MAE, Pearson r, Acc-7
            vals = [r.result["test"].get(k) for r in rs]
            if all(isinstance(v, (int, float)) for v in vals):
                cells[(s, m)][k] = mean_std(vals)
    return Table(keys, settings, models, cells)


METRICS = (("acc", "Acc"), ("wf1", "W-F1"))
# (key, title, in percent): reported for regression runs next to the binary Acc and W-F1
REGRESSION_METRICS = (("mae", "MAE", False), ("corr", "Corr (Pearson r)", False), ("acc7", "Acc-7", True))


def _extra_metrics(table: Table) -> list[tuple[str, str, bool]]:
    return [m for m in REGRESSION_METRICS if any(m[0] in c for c in table.cells.values())]


def to_markdown(table: Table) -> str:
    """Two tables (Acc, W-F1) in percent, mean ± std, plus an Average row over settings."""
    lines = []
    head_keys = table.keys or ["setting"]
    metrics = [(k, t, True) for k, t in METRICS] + _extra_metrics(table)
    for metric, title, pct in metrics:
        unit = " (%)" if pct else ""
        lines.append(f"### Test {title}{unit}, mean ± std over seeds\n")
        lines.append("| " + " | ".join(head_keys + table.models) + " |")
        lines.append("|" + "---|" * (len(head_keys) + len(table.models)))
        for s in table.settings:
            row = list(s) if table.keys else ["all"]
            for m in table.models:
                c = table.cells.get((s, m))
                row.append("–" if c is None or metric not in c else _pm(*c[metric], c["n"], pct))
            lines.append("| " + " | ".join(row) + " |")
        if len(table.settings) > 1:
            row = ["**Average**"] + [""] * (len(head_keys) - 1)
            for m in table.models:
                means = [table.cells[(s, m)][metric][0] for s in table.settings
                         if metric in table.cells.get((s, m), {})]
                if not means:
                    row.append("–")
                else:
                    row.append(f"{100 * np.mean(means):.2f}" if pct else f"{np.mean(means):.4f}")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    counts = sorted({c["n"] for c in table.cells.values()})
    lines.append(f"Runs per cell: {', '.join(map(str, counts))}.")
    return "\n".join(lines) + "\n"


def _pm(mean: float, std: float, n: int, percent: bool = True) -> str:
    if not percent:
        return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f}"


def to_csv(table: Table) -> str:
    """Long format: setting keys, model, n, acc_mean, acc_std, wf1_mean, wf1_std (fractions), runs; then,
    when regression runs are present, mae_mean, mae_std, corr_mean, corr_std, acc7_mean, acc7_std."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    extra = [k for k, _t, _p in _extra_metrics(table)]
    w.writerow(table.keys + ["model", "n", "acc_mean", "acc_std", "wf1_mean", "wf1_std", "runs"]
               + [f"{k}_{s}" for k in extra for s in ("mean", "std")])
    for s in table.settings:
        for m in table.models:
            c = table.cells.get((s, m))
            if c is None:
                continue
            more = [v for k in extra for v in c.get(k, ("", ""))]
            w.writerow(list(s) + [m, c["n"], *c["acc"], *c["wf1"], " ".join(c["runs"])] + more)
    return buf.getvalue()


def to_wide_csv(table: Table, metric: str) -> str:
    """Paper layout for one metric: a row per setting, a 'mean ± std' column per model (percent)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow((table.keys or ["setting"]) + table.models)
    for s in table.settings:
        row = list(s) if table.keys else ["all"]
        for m in table.models:
            c = table.cells.get((s, m))
            row.append("" if c is None else _pm(*c[metric], c["n"]))
        w.writerow(row)
    return buf.getvalue()
