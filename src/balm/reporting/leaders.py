"""Which method leads where: per backbone and setting, the sweep's columns ranked by test metric.

Within one backbone and one setting (table row), the columns (variants, or cases) are ranked by
their mean test metric over seeds, highest first; tied means share the average of their ranks.
The *leader* is the top column (a tie for the top goes to the first column in sweep order), the
*runner-up* the next one. The margin is the difference of their means; "ahead on seeds" counts
the seeds, among those both ran, on which the leader's run scored strictly higher than the
runner-up's run of the same seeds (``seed`` and ``mask_seed``). Over the settings each column
gets its mean rank and the number of settings it leads.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from .tables import METRICS, RunResult, setting_keys, setting_label


@dataclass
class Leaders:
    keys: list[str]  # setting keys (row label columns)
    settings: list[tuple[str, ...]]  # row labels, in first-seen order
    backbones: list[str]  # in first-seen order
    columns: dict  # backbone -> its column labels (models), in first-seen order
    # (backbone, setting, metric) -> {"ranking": [(model, mean, rank), ...] best first,
    #                                 "leader", "runner_up", "margin", "ahead": (k, n)}
    rows: dict
    # (backbone, model, metric) -> {"mean_rank": float, "led": int, "settings": int}
    summary: dict


def average_ranks(values: list[float]) -> list[float]:
    """Rank 1 = highest value; ties share the mean of the ranks they span."""
    a = np.asarray(values, dtype=np.float64)
    order = np.argsort(-a, kind="stable")
    ranks = np.empty(len(a))
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and a[order[j + 1]] == a[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks.tolist()


def _seed_key(r: RunResult) -> tuple:
    return r.config.get("seed"), r.config.get("mask_seed")


def build_leaders(runs: list[RunResult]) -> Leaders:
    """Rank every backbone's columns within each setting, for test accuracy and weighted-F1."""
    keys = setting_keys(runs)
    settings, backbones, columns, groups = [], [], {}, {}
    for r in runs:
        s, b = setting_label(r, keys), r.config["backbone"]
        if s not in settings:
            settings.append(s)
        if b not in backbones:
            backbones.append(b)
        cols = columns.setdefault(b, [])
        if r.model not in cols:
            cols.append(r.model)
        groups.setdefault((b, s, r.model), {}).setdefault(_seed_key(r), r)
    rows: dict = {}
    summary: dict = {}
    for b in backbones:
        for metric, _ in METRICS:
            for s in settings:
                present = [m for m in columns[b] if (b, s, m) in groups]
                if not present:
                    continue
                means = [float(np.mean([r.result["test"][metric] for r in groups[(b, s, m)].values()])) for m in present]
                ranks = average_ranks(means)
                order = sorted(range(len(present)), key=lambda i: (-means[i], i))
                ranking = [(present[i], means[i], ranks[i]) for i in order]
                leader = ranking[0][0]
                row = {"ranking": ranking, "leader": leader, "runner_up": None, "margin": None, "ahead": None}
                if len(ranking) > 1:
                    runner = ranking[1][0]
                    a, c = groups[(b, s, leader)], groups[(b, s, runner)]
                    common = [k for k in a if k in c]
                    ahead = sum(a[k].result["test"][metric] > c[k].result["test"][metric] for k in common)
                    row.update(runner_up=runner, margin=ranking[0][1] - ranking[1][1], ahead=(int(ahead), len(common)))
                rows[(b, s, metric)] = row
                for m, _, rank in ranking:
                    e = summary.setdefault((b, m, metric), {"ranks": [], "led": 0})
                    e["ranks"].append(rank)
                    e["led"] += int(m == leader)
    summary = {k: {"mean_rank": float(np.mean(v["ranks"])), "led": v["led"], "settings": len(v["ranks"])}
               for k, v in summary.items()}
    return Leaders(keys, settings, backbones, columns, rows, summary)


def to_markdown(leaders: Leaders, reference: str | None = "balm") -> str:
    """Per backbone and metric: the leader of each setting, then each column's mean rank and settings led.

    ``reference`` (a column name, e.g. ``balm``) adds that column's rank to every setting's row."""
    lines = []
    head_keys = leaders.keys or ["setting"]
    for b in leaders.backbones:
        if len(leaders.columns[b]) < 2:  # one column: nothing to rank
            continue
        ref_model = None
        if reference is not None:
            ref_model = b if reference == "none" else f"{b}+{reference}"
            if ref_model not in leaders.columns[b]:
                ref_model = None
        for metric, title in METRICS:
            if not any((b, s, metric) in leaders.rows for s in leaders.settings):
                continue
            lines.append(f"### Leader per setting: `{b}`, test {title} (%)\n")
            head = head_keys + ["leader", "runner-up", "margin (points)", "leader ahead on seeds"]
            if ref_model:
                head.append(f"rank of `{ref_model}` (of {len(leaders.columns[b])})")
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            for s in leaders.settings:
                row = leaders.rows.get((b, s, metric))
                if row is None:
                    continue
                cells = list(s) if leaders.keys else ["all"]
                top = row["ranking"][0]
                cells.append(f"{top[0]} {100 * top[1]:.2f}")
                if row["runner_up"] is None:
                    cells += ["–", "–", "–"]
                else:
                    second = row["ranking"][1]
                    cells += [f"{second[0]} {100 * second[1]:.2f}", f"{100 * row['margin']:.2f}",
                              f"{row['ahead'][0]}/{row['ahead'][1]}"]
                if ref_model:
                    rank = next((f"{rk:g}" for m, _, rk in row["ranking"] if m == ref_model), "–")
                    cells.append(rank)
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
            lines.append(f"Mean rank over settings (1 = best) and settings led, `{b}`, test {title}:\n")
            lines.append("| model | mean rank | settings led |")
            lines.append("|---|---|---|")
            entries = [(m, leaders.summary[(b, m, metric)]) for m in leaders.columns[b] if (b, m, metric) in leaders.summary]
            for m, e in sorted(entries, key=lambda x: x[1]["mean_rank"]):
                lines.append(f"| {m} | {e['mean_rank']:.2f} | {e['led']}/{e['settings']} |")
            lines.append("")
    return "\n".join(lines) + ("\n" if lines else "")


def to_csv(leaders: Leaders) -> str:
    """Long format (fractions): backbone, setting keys, metric, rank, model, mean; one row per ranked column."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["backbone"] + leaders.keys + ["metric", "rank", "model", "mean"])
    for b in leaders.backbones:
        for metric, _ in METRICS:
            for s in leaders.settings:
                row = leaders.rows.get((b, s, metric))
                if row is None:
                    continue
                for m, mean, rank in row["ranking"]:
                    w.writerow([b, *s, metric, f"{rank:g}", m, mean])
    return buf.getvalue()
