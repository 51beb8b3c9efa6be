"""Diagnostics tables of a sweep: headroom per missing pattern and Shapley values per modality.

**Headroom.** A *joint* run trains on every modality of its dataset; a *subset* run of it has
the same config except ``modalities`` (and possibly ``method``/``method_options``), so it sees
the same utterances with the same masks. For each missing pattern P (the modalities present
in a test utterance) the joint model's accuracy / W-F1 on the test utterances with pattern P
stands next to the subset run trained on exactly P's modalities, on the same utterances
(both from ``predictions.npz``). The subset run is the one with the joint run's method when
the sweep has it, else the plain model (``none``; single modalities have nothing to balance).
``gap = alone − joint``: positive where a model of the pattern's modalities alone beats the
joint model on those utterances, the room any balancing could recover. Means over seeds.

**Shapley.** ``result.json``'s ``shapley`` (computed by
:func:`balm.experiments.diagnostics.shapley_report`), averaged over seeds per model and setting.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from balm.experiments.diagnostics import pattern_of, pattern_scores

from .tables import RunResult, setting_keys, setting_label

SUBSET_KEYS = ("modalities", "method", "method_options")


def _is_joint(r: RunResult) -> bool:
    ds = r.result["dataset"]
    return list(ds.get("used_modalities", [])) == list(ds.get("modalities", []))


def _match_key(r: RunResult) -> str:
    return json.dumps({k: v for k, v in r.config.items() if k not in SUBSET_KEYS}, sort_keys=True, default=str)


def load_predictions(r: RunResult) -> dict[str, np.ndarray] | None:
    name = (r.result.get("files") or {}).get("predictions")
    if not name or not (r.path / name).exists():
        return None
    with np.load(r.path / name, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def headroom_rows(runs: list[RunResult]) -> list[dict]:
    """One row per (joint model, setting, missing pattern) that has a matching subset run:
    ``n`` utterances, joint and alone acc / W-F1 (fractions, mean over seeds), ``gap_wf1``, ``seeds``."""
    keys = [k for k in setting_keys(runs) if k != "modalities"]
    by_key: dict[str, list[RunResult]] = {}
    for r in runs:
        by_key.setdefault(_match_key(r), []).append(r)
    cells: dict[tuple, list[dict]] = {}
    for j in runs:
        if not _is_joint(j):
            continue
        subs = {}
        for s in by_key.get(_match_key(j), []):
            if s is j or _is_joint(s):
                continue
            mods = frozenset(s.result["dataset"]["used_modalities"])
            same = s.config.get("method") == j.config.get("method") and \
                s.config.get("method_options") == j.config.get("method_options")
            if same or (mods not in subs and s.config.get("method") == "none"):
                subs[mods] = s
        if not subs:
            continue
        pj = load_predictions(j)
        if pj is None:
            continue
        mods = [str(m) for m in pj["modalities"]]
        patterns = pattern_of({m: pj[f"mask_{m}"] for m in mods})
        task, nc = j.result["task"], j.result["dataset"]["num_classes"]
        joint = pattern_scores(task, pj["targets"], pj["predictions"], patterns, nc)
        for pat, js in joint.items():
            present = frozenset(pat.split("+")) if pat != "∅" else frozenset()
            s = subs.get(present)
            if s is None:
                continue
            ps = load_predictions(s)
            if ps is None or ps["targets"].shape != pj["targets"].shape or not np.array_equal(ps["targets"], pj["targets"]) \
                    or any(not np.array_equal(ps[f"mask_{m}"], pj[f"mask_{m}"]) for m in present):
                continue  # not the same utterances / masks: no comparison
            sel = patterns == pat
            alone = pattern_scores(task, ps["targets"][sel], ps["predictions"][sel], patterns[sel], nc)[pat]
            label = setting_label(j, keys)
            cells.setdefault((j.model, label, pat), []).append(
                {"n": js["n"], "joint_acc": js["acc"], "joint_wf1": js["wf1"], "alone_acc": alone["acc"],
                 "alone_wf1": alone["wf1"], "alone_model": s.model})
    rows = []
    for (model, label, pat), vals in cells.items():
        row = {"model": model, **dict(zip(keys, label)), "pattern": pat,
               "alone_model": vals[0]["alone_model"], "seeds": len(vals),
               "n": float(np.mean([v["n"] for v in vals]))}
        for k in ("joint_acc", "joint_wf1", "alone_acc", "alone_wf1"):
            row[k] = float(np.mean([v[k] for v in vals]))
        row["gap_wf1"] = row["alone_wf1"] - row["joint_wf1"]
        rows.append(row)
    order = {k: i for i, k in enumerate(dict.fromkeys((m, lab) for m, lab, _ in cells))}
    rows.sort(key=lambda r: (order[(r["model"], tuple(r[k] for k in keys))], -r["pattern"].count("+"), r["pattern"]))
    return rows


def shapley_rows(runs: list[RunResult]) -> list[dict]:
    """One row per (model, setting): mean over seeds of each modality's Shapley value of test
    W-F1, v(all), v(∅) (fractions) and the number of runs."""
    keys = setting_keys(runs)
    cells: dict[tuple, list[dict]] = {}
    for r in runs:
        sh = r.result.get("shapley")
        if sh:
            cells.setdefault((r.model, setting_label(r, keys)), []).append(sh)
    rows = []
    for (model, label), shs in cells.items():
        mods = list(shs[0]["values"])
        full = "+".join(mods)
        row = {"model": model, **dict(zip(keys, label)), "runs": len(shs)}
        for m in mods:
            row[f"phi_{m}"] = float(np.mean([s["values"][m] for s in shs]))
        row["v_all"] = float(np.mean([s["subsets"][full] for s in shs]))
        row["v_none"] = float(np.mean([s["subsets"]["∅"] for s in shs]))
        rows.append(row)
    return rows


def _pct(v: float) -> str:
    return f"{100 * v:.2f}" if np.isfinite(v) else "—"


def headroom_markdown(rows: list[dict], keys: list[str]) -> str:
    if not rows:
        return ""
    lines = ["| model | " + " | ".join(keys) + (" | " if keys else "") +
             "pattern (present) | n | joint Acc | joint W-F1 | alone model | alone Acc | alone W-F1 | gap W-F1 |",
             "|" + "---|" * (9 + len(keys))]
    for r in rows:
        lines.append(f"| {r['model']} | " + "".join(f"{r[k]} | " for k in keys) +
                     f"{r['pattern']} | {r['n']:.0f} | {_pct(r['joint_acc'])} | {_pct(r['joint_wf1'])} | "
                     f"{r['alone_model']} | {_pct(r['alone_acc'])} | {_pct(r['alone_wf1'])} | "
                     f"{100 * r['gap_wf1']:+.2f} |")
    return "\n".join(lines) + "\n"


def shapley_markdown(rows: list[dict], keys: list[str]) -> str:
    if not rows:
        return ""
    mods = list(dict.fromkeys(k[4:] for r in rows for k in r if k.startswith("phi_")))
    lines = ["| model | " + " | ".join(keys) + (" | " if keys else "") + " | ".join(f"φ {m}" for m in mods) +
             " | v(all) | v(∅) | runs |",
             "|" + "---|" * (len(keys) + len(mods) + 4)]
    for r in rows:
        phis = " | ".join(f"{100 * r['phi_' + m]:+.2f}" if f"phi_{m}" in r else "—" for m in mods)
        lines.append(f"| {r['model']} | " + "".join(f"{r[k]} | " for k in keys) +
                     f"{phis} | {_pct(r['v_all'])} | {_pct(r['v_none'])} | {r['runs']} |")
    return "\n".join(lines) + "\n"


def write_csv_rows(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    from balm.io import atomic_write_text

    buf = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
