"""Paired comparison of a sweep's columns against the references ``none`` and ``balm``.

For each setting (table row) and each column (backbone + variant, or backbone + case), the runs
are paired with the reference's runs of the same backbone and setting that share the seeds
(``seed`` and ``mask_seed``); every other config key is then equal too, because every key that
varies across the sweep is a setting key, a column key or a seed key. Each pair gives the
difference ``d = metric(column) − metric(reference)`` of test accuracy and weighted-F1; a cell
reports the mean and the sample standard deviation (``ddof=1``, 0 for one pair) of the ``d``
over the pairs. A column *wins* a setting against a reference when the mean paired difference
is > 0; the wins are counted over the settings where the pair exists.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from .tables import METRICS, RunResult, mean_std, setting_keys, setting_label

REFERENCES = ("none", "balm")


@dataclass
class PairedTable:
    keys: list[str]  # setting keys (row label columns)
    settings: list[tuple[str, ...]]  # row labels, in first-seen order
    models: list[str]  # column labels, in first-seen order
    references: list[str]  # the references present in the sweep (of REFERENCES)
    # (setting, model, reference) -> {"acc": (mean, std), "wf1": (mean, std), "n": pairs, "seeds": [...],
    #                                 "diffs": {"acc": [...], "wf1": [...]}, "reference_model": label}
    cells: dict
    # (model, reference) -> {"settings": n, "acc": wins, "wf1": wins}
    wins: dict


def _seed_key(r: RunResult) -> tuple:
    return r.config.get("seed"), r.config.get("mask_seed")


def build_paired(runs: list[RunResult], references: tuple[str, ...] = REFERENCES) -> PairedTable:
    """Paired differences of every column against each reference column of the same backbone."""
    keys = setting_keys(runs)
    settings, models, groups, label = [], [], {}, {}
    for r in runs:
        s = setting_label(r, keys)
        if s not in settings:
            settings.append(s)
        if r.model not in models:
            models.append(r.model)
        label[(r.config["backbone"], r.column)] = r.model
        groups.setdefault((s, r.config["backbone"], r.column), {}).setdefault(_seed_key(r), r)
    present = [ref for ref in references if any(col == ref for (_, col) in label)]
    cells: dict = {}
    for (s, backbone, column), by_seed in groups.items():
        for ref in present:
            ref_runs = groups.get((s, backbone, ref))
            if column == ref or not ref_runs:
                continue
            common = [k for k in by_seed if k in ref_runs]
            if not common:
                continue
            diffs = {m: [by_seed[k].result["test"][m] - ref_runs[k].result["test"][m] for k in common] for m, _ in METRICS}
            cells[(s, label[(backbone, column)], ref)] = {
                **{m: mean_std(d) for m, d in diffs.items()},
                "n": len(common),
                "seeds": [k[0] for k in common],
                "diffs": diffs,
                "reference_model": label[(backbone, ref)],
            }
    wins: dict = {}
    for (s, model, ref), c in cells.items():
        w = wins.setdefault((model, ref), {"settings": 0, **{m: 0 for m, _ in METRICS}})
        w["settings"] += 1
        for m, _ in METRICS:
            w[m] += int(c[m][0] > 0)
    return PairedTable(keys, settings, models, present, cells, wins)


def _pm(mean: float, std: float, n: int) -> str:
    return f"{100 * mean:+.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:+.2f}"


def to_markdown(table: PairedTable) -> str:
    """Per reference and metric: paired differences in points (mean ± std over seeds) and wins."""
    if not table.cells:
        return ""
    lines = []
    head_keys = table.keys or ["setting"]
    for ref in table.references:
        models = [m for m in table.models if any((s, m, ref) in table.cells for s in table.settings)]
        if not models:
            continue
        for metric, title in METRICS:
            lines.append(f"### Paired test {title} difference against `{ref}` (points), mean ± std over seeds\n")
            lines.append("| " + " | ".join(head_keys + models) + " |")
            lines.append("|" + "---|" * (len(head_keys) + len(models)))
            for s in table.settings:
                row = list(s) if table.keys else ["all"]
                for m in models:
                    c = table.cells.get((s, m, ref))
                    row.append("–" if c is None else _pm(*c[metric], c["n"]))
                lines.append("| " + " | ".join(row) + " |")
            row = ["**Wins** (mean > 0)"] + [""] * (len(head_keys) - 1)
            for m in models:
                w = table.wins[(m, ref)]
                row.append(f"{w[metric]}/{w['settings']}")
            lines.append("| " + " | ".join(row) + " |")
            lines.append("")
    counts = sorted({c["n"] for c in table.cells.values()})
    lines.append(f"Each difference pairs runs of the same backbone, setting and seed; pairs per cell: "
                 f"{', '.join(map(str, counts))}.")
    return "\n".join(lines) + "\n"


def to_csv(table: PairedTable) -> str:
    """Long format (fractions): setting keys, model, reference (name and column label), n, acc/wf1 mean and std of the
    paired differences, the seeds paired."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(table.keys + ["model", "reference", "reference_model", "n", "acc_diff_mean", "acc_diff_std", "wf1_diff_mean",
                             "wf1_diff_std", "seeds"])
    for ref in table.references:
        for s in table.settings:
            for m in table.models:
                c = table.cells.get((s, m, ref))
                if c is None:
                    continue
                w.writerow(list(s) + [m, ref, c["reference_model"], c["n"], *c["acc"], *c["wf1"],
                                      " ".join(map(str, c["seeds"]))])
    return buf.getvalue()


def wins_csv(table: PairedTable) -> str:
    """model, reference (name and column label), settings compared, settings won on accuracy and on weighted-F1."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "reference", "reference_model", "settings", "wins_acc", "wins_wf1"])
    for ref in table.references:
        for m in table.models:
            c = table.wins.get((m, ref))
            if c is not None:
                ref_model = next(v["reference_model"] for (s, mm, rr), v in table.cells.items() if mm == m and rr == ref)
                w.writerow([m, ref, ref_model, c["settings"], c["acc"], c["wf1"]])
    return buf.getvalue()


@dataclass
class AgainstTable:
    keys: list[str]
    settings: list[tuple[str, ...]]
    models: list[str]  # every column but the reference, first-seen order
    reference: str
    # (setting, model) -> {"acc"/"wf1": {"mean", "std", "ahead", "n", "p"}, "seeds": [...]}
    cells: dict
    # model -> {"acc"/"wf1": same, over every (setting, seed) pair of the sweep}
    overall: dict


def build_against(runs: list[RunResult], reference: str) -> AgainstTable:
    """Paired differences of every column against the column labelled ``reference``, across
    backbones: a run is paired with the reference's run of the same setting and seeds (``seed``,
    ``mask_seed``), so both saw the same masks and data order. Per setting and over all settings:
    mean and std (ddof=1) of the test differences, the pairs ahead (> 0), and the paired t-test
    p-value. ``ValueError`` names the columns when ``reference`` is not one of them."""
    keys = setting_keys(runs)
    settings, models, groups = [], [], {}
    for r in runs:
        s = setting_label(r, keys)
        if s not in settings:
            settings.append(s)
        if r.model not in models:
            models.append(r.model)
        groups.setdefault((s, r.model), {}).setdefault(_seed_key(r), r)
    if reference not in models:
        raise ValueError(f"--against {reference!r}: no such column in this sweep; its columns are {models}")
    from .select import paired

    def scores(by_seed: dict, keys: list, metric: str) -> dict:
        return {k: by_seed[k].result["test"][metric] for k in keys}

    cells, overall = {}, {}
    for m in models:
        if m == reference:
            continue
        pooled: dict = {x: ({}, {}) for x, _ in METRICS}  # (setting, seeds) -> score, for m and the reference
        for s in settings:
            mine, ref = groups.get((s, m), {}), groups.get((s, reference), {})
            common = [k for k in mine if k in ref]
            if not common:
                continue
            cells[(s, m)] = {x: paired(scores(mine, common, x), scores(ref, common, x)) for x, _ in METRICS}
            cells[(s, m)]["seeds"] = [k[0] for k in common]
            for x, _ in METRICS:
                pooled[x][0].update({(s, k): v for k, v in scores(mine, common, x).items()})
                pooled[x][1].update({(s, k): v for k, v in scores(ref, common, x).items()})
        if pooled[METRICS[0][0]][0]:
            overall[m] = {x: paired(*pooled[x]) for x, _ in METRICS}
    return AgainstTable(keys, settings, [m for m in models if m != reference], reference, cells, overall)


def _cell(c: dict) -> str:
    p = "" if c["p"] != c["p"] else f", p {c['p']:.2g}"
    return f"{_pm(c['mean'], c['std'], c['n'])} ({c['ahead']}/{c['n']}{p})"


def against_markdown(table: AgainstTable) -> str:
    """Per metric: rows = settings, then all settings pooled; cells 'mean ± std (ahead/pairs, p)' in points."""
    lines = []
    head = table.keys or ["setting"]
    models = [m for m in table.models if m in table.overall]
    for metric, title in METRICS:
        lines.append(f"### Paired test {title} difference against `{table.reference}` (points): mean ± std "
                     "(pairs ahead / pairs, paired t-test p)\n")
        lines.append("| " + " | ".join(head + models) + " |")
        lines.append("|" + "---|" * (len(head) + len(models)))
        for s in table.settings:
            row = list(s) if table.keys else ["all"]
            row += ["–" if (s, m) not in table.cells else _cell(table.cells[(s, m)][metric]) for m in models]
            lines.append("| " + " | ".join(row) + " |")
        row = ["**all settings**"] + [""] * (len(head) - 1) + [_cell(table.overall[m][metric]) for m in models]
        lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def against_csv(table: AgainstTable) -> str:
    """Long format (fractions): setting keys ('all' pooled), model, reference, then per metric mean, std, ahead, n, p."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = [f"{x}_{k}" for x, _ in METRICS for k in ("diff_mean", "diff_std", "ahead", "n", "p")]
    w.writerow(table.keys + ["model", "reference", *cols])
    rows = [(list(s), m, table.cells[(s, m)]) for s in table.settings for m in table.models if (s, m) in table.cells]
    rows += [(["all"] * len(table.keys), m, table.overall[m]) for m in table.models if m in table.overall]
    for s, m, c in rows:
        w.writerow(s + [m, table.reference] + [c[x][k] for x, _ in METRICS for k in ("mean", "std", "ahead", "n", "p")])
    return buf.getvalue()
