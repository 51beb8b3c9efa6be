"""A sweep folder on disk: its layout, the plan, each run's result and the summary.

Layout of a sweep folder ``DIR`` (docs/experiments.md)::

    DIR/sweep.json          the plan: source, axes, base, run ids and settings in order, cases
    DIR/summary.csv         one row per finished run of the plan (rebuilt from the result files)
    DIR/runs/<id>/          one run: config.json, config.yaml, the trainer's files, result.json last
    DIR/.lock               held while a sweep runs in DIR

A run is finished when its ``result.json`` is valid JSON with status ``finished``, and done
(not run again) when it is finished or ``diverged``. Hidden folders in ``runs/`` (an unfinished
run's ``.<id>.partial``) are not runs. This module only reads and writes these files; the sweep
driver and ``balm report`` both go through it.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .config import Config
from balm.io import atomic_write_json, atomic_write_text

PLAN = "sweep.json"
SUMMARY = "summary.csv"
RUNS = "runs"
RESULT = "result.json"
CASES = "cases"  # the sweep axis of named override mappings, and the plan's key for them

SUMMARY_KEYS = ("data", "backbone", "method", "rates", "modalities", "seed", "tau", "rho", "epochs")
METRIC_COLUMNS = ("test_acc", "test_wf1", "dev_acc", "dev_wf1", "best_epoch", "epochs_run", "train_seconds")


def short(value: Any) -> str:
    """A value as a short token (run-id prefixes and summary cells): ``0.5``, ``a-b``, a file's name."""
    if isinstance(value, dict):
        return "-".join(short(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return "-".join(short(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and ("/" in value or ":" in value):
        return Path(value.split(":")[-1]).name or value
    return str(value)


# --------------------------------------------------------------------------- one run


RESULT_SCHEMA = "balm-result/1"


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def result_problem(res: Any) -> str | None:
    """What makes ``res`` (a parsed ``result.json``) not a valid result of schema ``balm-result/1``
    (docs/experiments.md), or None. A diverged run needs no test metrics."""
    if not isinstance(res, dict):
        return f"expected a JSON object, got {type(res).__name__}"
    if res.get("schema") != RESULT_SCHEMA:
        return f"schema {res.get('schema')!r}, expected {RESULT_SCHEMA!r}"
    status = res.get("status")
    if status not in ("finished", "diverged"):
        return f"status {status!r}, expected 'finished' or 'diverged'"
    if not isinstance(res.get("config"), dict):
        return "'config' is missing or not an object"
    if status == "diverged":
        return None if isinstance(res.get("diverged"), dict) else "'diverged' is missing or not an object"
    for split in ("test", "dev"):
        m = res.get(split)
        if not isinstance(m, dict):
            return f"{split!r} is missing or not an object"
        for k in ("acc", "wf1"):
            if not _is_num(m.get(k)) or not 0.0 <= m[k] <= 1.0:
                return f"{split}.{k} = {m.get(k)!r}, expected a number in [0, 1]"
    for k in ("best_epoch", "epochs_run"):
        if not isinstance(res.get(k), int) or isinstance(res.get(k), bool) or res[k] < 0:
            return f"{k!r} = {res.get(k)!r}, expected an integer >= 0"
    if not _is_num(res.get("train_seconds")):
        return f"'train_seconds' = {res.get('train_seconds')!r}, expected a number"
    ds = res.get("dataset")
    if not isinstance(ds, dict) or not isinstance(ds.get("used_modalities"), list):
        return "'dataset.used_modalities' is missing or not a list"
    if not isinstance(res.get("realised_rates"), dict):
        return "'realised_rates' is missing or not an object"
    return None


def load_result(run_dir: Path) -> tuple[dict | None, str | None]:
    """(the parsed, schema-checked ``result.json`` of ``run_dir`` or None, what is wrong with it or
    None); a missing file is (None, None)."""
    p = run_dir / RESULT
    try:
        with open(p, encoding="utf-8") as fh:
            res = json.load(fh)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"cannot read it as JSON ({' '.join(str(exc).split())})"
    problem = result_problem(res)
    return (None, problem) if problem else (res, None)


def read_result(run_dir: Path) -> dict | None:
    """The run's result if it is finished (valid against the schema, status 'finished'), else None."""
    res, _ = load_result(run_dir)
    return res if res is not None and res["status"] == "finished" else None


def scan_runs(sweep_dir: str | Path) -> dict:
    """The state of the current plan's runs: ``finished`` and ``diverged`` (run folders),
    ``damaged`` ((result file, what is wrong) pairs) and ``missing`` (planned run ids without a
    result: not run yet, running, failed or damaged)."""
    root = Path(sweep_dir)
    out: dict = {"finished": [], "diverged": [], "damaged": [], "missing": []}
    for d in plan_run_dirs(root)[0]:
        res, problem = load_result(d)
        if problem is not None:
            out["damaged"].append((d / RESULT, problem))
        elif res is not None:
            out[res["status"]].append(d)
    plan = read_plan(root)
    ids = plan_run_ids(plan) if plan is not None else None
    done = {d.name for d in out["finished"] + out["diverged"]}
    out["missing"] = [i for i in (ids or []) if i not in done]
    return out


def is_finished(run_dir: Path, cfg: Config) -> bool:
    """Whether ``run_dir`` holds a finished result of exactly ``cfg``."""
    res = read_result(run_dir)
    return res is not None and res.get("config") == cfg.to_dict()


def read_diverged(run_dir: Path) -> dict | None:
    """The run's result if it diverged (valid against the schema, status 'diverged'), else None."""
    res, _ = load_result(run_dir)
    return res if res is not None and res["status"] == "diverged" else None


def is_done(run_dir: Path, cfg: Config) -> bool:
    """Whether ``run_dir`` holds a finished or diverged result of exactly ``cfg`` (a deterministic
    run that diverged would diverge again: a sweep records it and does not rerun it)."""
    if is_finished(run_dir, cfg):
        return True
    res = read_diverged(run_dir)
    return res is not None and res.get("config") == cfg.to_dict()


# --------------------------------------------------------------------------- the plan


def write_plan(sweep_dir: Path, plan: dict) -> None:
    """Replace ``sweep_dir/sweep.json`` atomically."""
    atomic_write_json(Path(sweep_dir) / PLAN, plan)


def read_plan(sweep_dir: str | Path) -> dict | None:
    """``sweep_dir/sweep.json`` (the plan a sweep writes when it starts), or None when it is missing,
    unreadable or has no run list."""
    try:
        plan = json.loads((Path(sweep_dir) / PLAN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) and isinstance(plan.get("runs"), list) else None


def plan_run_ids(plan: dict) -> list[str] | None:
    """The run ids of ``plan`` in its order, or None when an entry is malformed."""
    try:
        return [r["id"] for r in plan["runs"]]
    except (KeyError, TypeError):
        return None


def plan_cases(sweep_dir: Path) -> tuple[dict[str, str], dict[str, dict]]:
    """(run id -> case name, case name -> overrides) from ``sweep_dir/sweep.json``; empty without cases."""
    plan = read_plan(sweep_dir)
    if plan is None:
        return {}, {}
    try:
        ids = {r["id"]: r["setting"][CASES] for r in plan["runs"] if CASES in r.get("setting", {})}
    except (KeyError, TypeError, AttributeError):
        return {}, {}
    cases = plan.get("cases") or {}
    return (ids, cases) if isinstance(cases, dict) else ({}, {})


def plan_run_dirs(sweep_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """(run folders of the current plan, run folders outside it) under ``sweep_dir/runs``, by name.

    The plan is ``sweep.json``'s run list, rewritten each time a sweep starts in the folder; a
    folder left by an earlier version of the sweep config (another resolved config, hence
    another id) is outside it. Without a readable plan every folder counts as planned."""
    runs = Path(sweep_dir) / RUNS
    if not runs.is_dir():
        return [], []
    dirs = sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))
    plan = read_plan(sweep_dir)
    ids = plan_run_ids(plan) if plan is not None else None
    if ids is None:
        return dirs, []
    kept = set(ids)
    return [d for d in dirs if d.name in kept], [d for d in dirs if d.name not in kept]


# --------------------------------------------------------------------------- summary


def _fmt_setting(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "rates" and isinstance(value, dict):
        return "/".join(f"{v:g}" for v in value.values())
    if isinstance(value, list):
        return "+".join(short(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def summary_rows(sweep_dir: Path) -> list[dict]:
    """One row per finished run of the current plan under ``sweep_dir/runs`` (sorted by run id)."""
    rows = []
    case_of, _ = plan_cases(sweep_dir)
    for d in plan_run_dirs(sweep_dir)[0]:
        res = read_result(d)
        if res is None:
            continue
        cfg = res["config"]
        row = {"run_id": d.name}
        if d.name in case_of:
            row["case"] = case_of[d.name]
        for k in SUMMARY_KEYS:
            v = res.get("requested_rates") if k == "rates" else cfg.get(k)
            if k == "modalities":
                v = res["dataset"]["used_modalities"]
            row[k] = _fmt_setting(k, v)
        row.update({
            "test_acc": res["test"]["acc"], "test_wf1": res["test"]["wf1"],
            "dev_acc": res["dev"]["acc"], "dev_wf1": res["dev"]["wf1"],
            "best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"],
            "train_seconds": round(res["train_seconds"], 3),
        })
        for m, r in res["realised_rates"].get("train", {}).items():
            row[f"train_missing_{m}"] = round(r, 6)
        for k, v in cfg.get("backbone_options", {}).items():
            row[f"backbone_options.{k}"] = v
        rows.append(row)
    return rows


def write_summary(sweep_dir: Path) -> Path:
    """Rebuild ``summary.csv`` from the result files and replace it atomically."""
    rows = summary_rows(sweep_dir)
    cols: list[str] = ["run_id", *(["case"] if any("case" in r for r in rows) else []), *SUMMARY_KEYS, *METRIC_COLUMNS]
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    path = sweep_dir / SUMMARY
    atomic_write_text(path, buf.getvalue())
    return path
