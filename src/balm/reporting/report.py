"""``make_report(sweep_dir)``: tables, figures and an index under ``sweep_dir/report/``.

Files written (each replaced atomically):

- ``report.md``: both tables (Acc and W-F1, percent, mean ± std over seeds), the paired
  differences against ``none`` and ``balm`` (:mod:`balm.reporting.paired`) and links to figures;
- ``table.csv`` (long format, fractions), ``table_acc.csv`` / ``table_wf1.csv`` (paper layout);
- ``paired.csv`` (paired differences, long format, fractions) and ``paired_wins.csv``;
- ``leaders.csv``: every backbone's columns ranked within each setting (:mod:`balm.reporting.leaders`);
- ``lemma1.csv`` (one point per run and modality) and ``lemma1_fit.csv`` (slope per modality,
  only where a modality's availability takes at least 3 distinct values);
- ``headroom.csv``: per missing pattern, the joint model next to a model trained on the
  pattern's modalities alone (sweeps with subset runs, :mod:`balm.reporting.diagnostics`);
- ``shapley.csv``: each modality's exact Shapley value of test W-F1 per model and setting;
- ``figures/curves_*.png``, ``figures/tsne_*.png``, ``figures/lemma1_*.png``,
  ``figures/heads_*.png`` (unimodal head accuracy on dev over the epochs, per backbone + method).

``sweep_dir/summary.csv`` is rebuilt from the result files first.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import zipfile
from pathlib import Path

from balm.io import atomic_write_text, staged_dir

from . import diagnostics as DG
from . import figures as FG
from . import leaders as LD
from . import paired as PD
from .tables import build_table, load_results, setting_label, to_csv, to_markdown, to_wide_csv

TSNE_MODES = ("first", "all", "none")


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", "_".join(p for p in parts if p)).strip("_")[:100] or "all"


def _diverged_line(run_dir: Path) -> str:
    from balm.experiments.rundir import read_diverged

    dv = (read_diverged(run_dir) or {}).get("diverged", {})
    return f"epoch {dv.get('epoch')} step {dv.get('step')}: {dv.get('what')}"


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


# what a damaged per-run file (stats.jsonl, tsne.npz) raises when read
_DAMAGED = (ValueError, KeyError, IndexError, TypeError, OSError, EOFError, zipfile.BadZipFile)


def make_report(sweep_dir: str | Path, *, tsne: str = "first", curves: bool = True, max_figures: int = 24,
                warn=None, against: str | None = None) -> dict:
    """Write the report; returns ``{"dir", "table", "markdown", "figures": [...], "runs": n, "warnings": [...]}``.

    ``tsne``: ``first`` (one figure per model, its first setting and seed), ``all`` (every model
    and setting) or ``none``. ``against``: a column label (``mmgcn+balm``) every other column is
    paired with across backbones (:func:`balm.reporting.paired.build_against`; ``against.csv``). ``max_figures`` caps the curve and t-SNE figures each. The new
    report is built in ``.report.partial`` beside ``report/`` and swapped in when complete, so a
    failure leaves the earlier report as it was. A damaged ``result.json`` (not of the schema),
    ``stats.jsonl`` or ``tsne.npz`` is named in a warning (``warn(line)``, and the report's
    "Runs left out" section) and skipped; diverged runs are listed apart, never in a table, and
    planned runs without a result are listed as missing.
    """
    root = Path(sweep_dir)
    final = root / "report"
    warnings: list[str] = []

    def note(line: str) -> None:
        warnings.append(line)
        if warn is not None:
            warn(line)

    with staged_dir(final) as stage:
        rep = _make_report(root, stage, tsne=tsne, curves=curves, max_figures=max_figures, note=note,
                           warnings=warnings, against=against)
    rep.update(dir=final, markdown=final / "report.md", figures=[final / p.relative_to(stage) for p in rep["figures"]],
               warnings=warnings)
    return rep


def _make_report(root: Path, out: Path, *, tsne: str, curves: bool, max_figures: int, note,
                 warnings: list[str], against: str | None = None) -> dict:
    if tsne not in TSNE_MODES:
        raise ValueError(f"tsne must be one of {TSNE_MODES}, got {tsne!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such sweep folder")
    from balm.experiments.rundir import scan_runs

    state = scan_runs(root) if (root / "runs").is_dir() else {"diverged": [], "damaged": [], "missing": []}
    for path, problem in state["damaged"]:
        note(f"{path}: damaged result, left out: {problem}")
    runs = load_results(root)
    if not runs:
        raise ValueError(f"{root}: no finished run (no valid runs/*/result.json)")
    if (root / "runs").is_dir():
        from balm.experiments.rundir import write_summary

        write_summary(root)
    figdir = out / "figures"
    figdir.mkdir(parents=True)

    table = build_table(runs)
    md_table = to_markdown(table)
    atomic_write_text(out / "table.csv", to_csv(table))
    atomic_write_text(out / "table_acc.csv", to_wide_csv(table, "acc"))
    atomic_write_text(out / "table_wf1.csv", to_wide_csv(table, "wf1"))
    md_against = ""
    if against is not None:
        versus = PD.build_against(runs, against)  # an unknown column: ValueError naming the columns
        md_against = PD.against_markdown(versus)
        atomic_write_text(out / "against.csv", PD.against_csv(versus))
    paired = PD.build_paired(runs)
    md_paired = PD.to_markdown(paired)
    atomic_write_text(out / "paired.csv", PD.to_csv(paired))
    atomic_write_text(out / "paired_wins.csv", PD.wins_csv(paired))
    leaders = LD.build_leaders(runs)
    ranked = any(len(cols) > 1 for cols in leaders.columns.values())
    md_leaders = LD.to_markdown(leaders) if ranked else ""
    atomic_write_text(out / "leaders.csv", LD.to_csv(leaders))

    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault((r.model, setting_label(r, table.keys)), []).append(r)
    figures: list[Path] = []

    if curves:
        made = 0
        for (model, setting), rs in groups.items():
            if made >= max_figures:
                break
            files = [r.path / "stats.jsonl" for r in rs if (r.path / "stats.jsonl").exists()]
            plain = groups.get((rs[0].config["backbone"], setting), []) if model != rs[0].config["backbone"] else []
            plain_files = [r.path / "stats.jsonl" for r in plain if (r.path / "stats.jsonl").exists()]
            title = f"{model}  {', '.join(f'{k}={v}' for k, v in zip(table.keys, setting))}"
            try:
                p = FG.modulation_curves(files, figdir / f"curves_{_slug(model, *setting)}.png", title, plain_files,
                                         method_name=model)
            except _DAMAGED as exc:
                note(f"{', '.join(map(str, files + plain_files))}: a damaged stats.jsonl; curves of {model} skipped ({exc})")
                p = None
            if p:
                figures.append(p)
                made += 1

    if tsne != "none":
        made, seen_models = 0, set()
        for (model, setting), rs in groups.items():
            if made >= max_figures or (tsne == "first" and model in seen_models):
                continue
            r = sorted(rs, key=lambda x: x.config["seed"])[0]
            sample = r.path / "tsne.npz"
            if not sample.exists():
                continue
            title = f"{model}  {', '.join(f'{k}={v}' for k, v in zip(table.keys, setting))}  seed {r.config['seed']}"
            try:
                p = FG.tsne_figure(sample, figdir / f"tsne_{_slug(model, *setting)}.png", title,
                                   r.result["dataset"].get("label_names"))
            except _DAMAGED as exc:
                note(f"{sample}: damaged t-SNE sample, figure skipped ({type(exc).__name__}: {exc})")
                p = None
            if p:
                figures.append(p)
                made += 1
                seen_models.add(model)

    readable = []
    for r in runs:
        try:
            if (r.path / "stats.jsonl").exists():
                FG.mean_encoder_grad_norms(r.path / "stats.jsonl")
            readable.append(r)
        except _DAMAGED as exc:
            note(f"{r.path / 'stats.jsonl'}: damaged, run left out of Lemma 1 ({type(exc).__name__}: {exc})")
    points = FG.lemma1_points(readable)
    fits = FG.lemma1_fits(points)
    atomic_write_text(out / "lemma1.csv", _csv(points))
    atomic_write_text(out / "lemma1_fit.csv", _csv(fits))
    for model in dict.fromkeys(p["model"] for p in points):
        p = FG.lemma1_figure(points, fits, model, figdir / f"lemma1_{_slug(model)}.png")
        if p:
            figures.append(p)

    by_model: dict[str, list] = {}
    for r in runs:
        if DG._is_joint(r):
            by_model.setdefault(r.model, []).append(r)
    for model, rs in by_model.items():
        p = FG.head_accuracy_figure(rs, figdir / f"heads_{_slug(model)}.png",
                                    f"{model}: unimodal heads (runs on every modality)")
        if p:
            figures.append(p)
    no_heads = [m for m, rs in by_model.items() if not FG.head_accuracy_curves(rs)]

    headroom = DG.headroom_rows(runs)
    hkeys = [k for k in table.keys if k != "modalities"]
    DG.write_csv_rows(out / "headroom.csv", headroom)
    shapley = DG.shapley_rows(runs)
    DG.write_csv_rows(out / "shapley.csv", shapley)

    from balm.experiments.rundir import plan_run_dirs

    outside = plan_run_dirs(root)[1]
    note = (f" {len(outside)} folder(s) under runs/ outside the current sweep plan (sweep.json) are left out."
            if outside else "")
    lines = [f"# Report: {root.name}\n", f"{len(runs)} finished runs; models: {', '.join(table.models)}.{note}\n",
             md_table]
    if md_against:
        lines += [f"## Paired against `{against}`\n", md_against, "CSV: [against.csv](against.csv).\n"]
    if md_paired:
        lines += ["## Paired comparison\n", md_paired,
                  "CSV: [paired.csv](paired.csv) (per setting), [paired_wins.csv](paired_wins.csv) (wins).\n"]
    if md_leaders:
        lines += ["## Which method leads\n", md_leaders, "CSV: [leaders.csv](leaders.csv) (every column's rank per setting).\n"]
    if fits:
        lines.append("### Lemma 1: encoder gradient norm against availability 1 − r_m\n")
        lines.append("| model | modality | slope | r² | points | availability levels |")
        lines.append("|---|---|---|---|---|---|")
        for f in fits:
            lines.append(f"| {f['model']} | {f['modality']} | {f['slope']:.4g} | {f['r2']:.3f} | {f['points']} | "
                         f"{f['levels']} |")
        lines.append("")
    if points and len(fits) < len({(p["model"], p["modality"]) for p in points}):
        lines.append(f"Lemma 1: no slope is fitted for a modality whose availability takes fewer than "
                     f"{FG.MIN_LEMMA1_LEVELS} distinct values across the sweep's settings; its figure shows the "
                     "gradient norms alone.\n")
    if headroom:
        lines += ["## Headroom per missing pattern (test)\n",
                  "Joint model on the test utterances with each missing pattern, next to a model trained on that "
                  "pattern's modalities alone, on the same utterances (%, mean over seeds). gap = alone − joint: "
                  "positive gaps are room any balancing could recover.\n",
                  DG.headroom_markdown(headroom, hkeys), "CSV: [headroom.csv](headroom.csv).\n"]
    if shapley:
        lines += ["## Shapley value of each modality (test W-F1, points)\n",
                  "Exact, from 2^M evaluations of the selected model with modalities made absent (mask False, "
                  "features zero); the values sum to v(all) − v(∅).\n",
                  DG.shapley_markdown(shapley, table.keys), "CSV: [shapley.csv](shapley.csv).\n"]
    if no_heads:
        lines.append(f"Unimodal head accuracy is not available for {', '.join(no_heads)}: the method has no "
                     "unimodal heads (none, fcm-only, OGM-GE with split scores); docs/experiments.md.\n")
    left = [f"- diverged (not in any table): {d.name}: {_diverged_line(d)}" for d in state["diverged"]]
    left += [f"- damaged: {w}" for w in warnings]
    left += [f"- missing (planned, no result yet): {i}" for i in state["missing"]]
    if left:
        lines += ["## Runs left out\n", *left, ""]
    if figures:
        lines.append("### Figures\n")
        for p in figures:
            rel = p.relative_to(out)
            lines.append(f"- [{rel}]({rel})")
        lines.append("")
    atomic_write_text(out / "report.md", "\n".join(lines))
    return {"dir": out, "markdown": out / "report.md", "table": md_table, "paired": md_paired, "against": md_against, "figures": figures,
            "runs": len(runs), "lemma1": fits, "leaders": md_leaders, "headroom": headroom, "shapley": shapley,
            "diverged": [d.name for d in state["diverged"]], "missing": state["missing"]}
