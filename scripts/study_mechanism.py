"""The mechanism check of docs/study.md, from a finished configs/study/*-mechanism.yaml sweep.

    python scripts/study_mechanism.py runs/study/mosi-mechanism --figure docs/study/mosi-mechanism.png
    python scripts/study_mechanism.py runs/study/iemocap-mechanism --loss-epoch 10 --figure docs/study/iemocap-mechanism.png

Prints (1) test W-F1 per case and ρ (mean ± std over seeds; the slope of W-F1 in log ρ by least
squares over every run), and (2) per Δ definition, whether μ amplifies the lagging modality: over
the steps of every seed at ρ = 1.4, the share of steps where the modality with the highest
unimodal head loss (the lagging one) gets the largest μ, the mean Spearman correlation across
modalities between μ^m and head loss, and each modality's mean μ and step-to-step std of μ.
The figure: W-F1 against ρ per optimizer/modulation, and per Δ definition the μ^m traces of seed 0
next to each modality's unimodal head loss (moving averages over 10 steps).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def load(sweep: Path) -> list[dict]:
    plan = json.loads((sweep / "sweep.json").read_text())
    out = []
    for r in plan["runs"]:
        res = sweep / "runs" / r["id"] / "result.json"
        if res.is_file():
            out.append({"id": r["id"], "case": r["setting"]["cases"], "rho": r["setting"]["rho"],
                        "seed": r["setting"]["seed"], "result": json.loads(res.read_text()),
                        "stats": sweep / "runs" / r["id"] / "stats.jsonl"})
    return out


def steps(path: Path) -> list[dict]:
    return [s for s in map(json.loads, path.read_text().splitlines()) if s.get("kind") == "step" and "mu" in s]


def rho_table(runs: list[dict]) -> dict:
    table = {}
    for r in runs:
        table.setdefault(r["case"], {}).setdefault(r["rho"], []).append(r["result"]["test"]["wf1"])
    return table


def early_loss(runs: list[dict], epoch: int = 1) -> dict:
    """Mean training loss at ``epoch`` per case and ρ: how fast training goes."""
    table = {}
    for r in runs:
        hist = r["result"]["history"]
        if len(hist) > epoch:
            table.setdefault(r["case"], {}).setdefault(r["rho"], []).append(hist[epoch]["train_loss"])
    return table


def slope(points: dict) -> float:
    x = np.concatenate([[math.log(rho)] * len(v) for rho, v in points.items()])
    y = np.concatenate([v for v in points.values()])
    return float(np.polyfit(x, 100 * y, 1)[0])


def _spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if np.std(ra) == 0 or np.std(rb) == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def lagging(runs: list[dict], case: str, rho: float = 1.4) -> dict:
    """Does μ go to the lagging modality? Over every step of every seed of ``case`` at ``rho``."""
    hit, n, rhos, mus = 0, 0, [], {}
    for r in runs:
        if r["case"] != case or r["rho"] != rho:
            continue
        for s in steps(r["stats"]):
            mods = list(s["mu"])
            mu = np.array([s["mu"][m] for m in mods])
            loss = np.array([s["head_loss"][m] for m in mods])
            for m, v in zip(mods, mu):
                mus.setdefault(m, []).append(v)
            if np.ptp(mu) == 0:
                continue  # the fallback's equal μ: no modality favoured
            n += 1
            hit += int(np.argmax(mu) == np.argmax(loss))
            c = _spearman(mu, loss)
            if not math.isnan(c):
                rhos.append(c)
    return {"steps": n, "lagging_gets_max_mu": hit / n if n else math.nan,
            "spearman_mu_headloss": float(np.mean(rhos)) if rhos else math.nan,
            "mu_mean": {m: float(np.mean(v)) for m, v in mus.items()},
            "mu_step_std": {m: float(np.std(np.diff(v))) for m, v in mus.items()}}


def _smooth(v, k=10):
    v = np.asarray(v, dtype=float)
    return np.convolve(v, np.ones(k) / k, mode="valid") if v.size >= k else v


def figure(runs: list[dict], delta_cases: dict[str, str], rho_cases: list[str], path: Path, epoch: int = 2) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = rho_table(runs)
    fig, axes = plt.subplots(1, 2 + len(delta_cases), figsize=(4.2 * (2 + len(delta_cases)), 3.8))
    loss = early_loss(runs, epoch - 1)
    ax = axes[1]
    for case in rho_cases:
        if case in loss:
            xs = sorted(loss[case])
            ax.plot(xs, [np.mean(loss[case][x]) for x in xs], marker="o", label=case)
    for case, style in (("none-adam", "--"), ("none-sgd", ":")):
        if case in loss:
            ax.axhline(np.mean(sum(loss[case].values(), [])), color="k", ls=style, lw=1, label=case)
    ax.set_xticks(sorted({x for pts in loss.values() for x in pts}))
    ax.set_xlabel("ρ (modulation intensity)")
    ax.set_ylabel(f"training loss in epoch {epoch} (mean over seeds)")
    ax.set_title("speed: does ρ act on training?")
    ax.legend(fontsize=7)
    ax = axes[0]
    for case in rho_cases:
        if case not in table:
            continue
        xs = sorted(table[case])
        m = [100 * np.mean(table[case][x]) for x in xs]
        sd = [100 * np.std(table[case][x], ddof=1) for x in xs]
        ax.errorbar(xs, m, yerr=sd, marker="o", capsize=3, label=case)
    for case, style in (("none-adam", "--"), ("none-sgd", ":")):
        if case in table:
            ax.axhline(100 * np.mean(sum(table[case].values(), [])), color="k", ls=style, lw=1, label=case)
    ax.set_xticks(sorted({x for pts in table.values() for x in pts}))
    ax.set_xlabel("ρ (modulation intensity)")
    ax.set_ylabel("test W-F1 (%), mean ± std over seeds")
    ax.set_title("grm-only: W-F1 against ρ")
    ax.legend(fontsize=7)
    colors = {"audio": "tab:blue", "text": "tab:red", "visual": "tab:green"}
    for ax, (label, case) in zip(axes[2:], delta_cases.items()):
        run = next((r for r in runs if r["case"] == case and r["rho"] == 1.4 and r["seed"] == 0), None)
        if run is None:
            continue
        st = steps(run["stats"])
        twin = ax.twinx()
        for m in st[0]["mu"]:
            c = colors.get(m)
            ax.plot(_smooth([s["mu"][m] for s in st]), color=c, lw=1.4, label=f"μ {m}")
            twin.plot(_smooth([s["head_loss"][m] for s in st]), color=c, lw=0.9, ls="--")
        ax.set_title(f"Δ {label}: μ (solid), head loss (dashed)", fontsize=9)
        ax.set_xlabel("training step (seed 0, ρ 1.4)")
        ax.set_ylabel("μ^m (10-step mean)")
        twin.set_ylabel("unimodal head loss (10-step mean)")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--figure", type=Path)
    ap.add_argument("--loss-epoch", type=int, default=2,
                    help="the epoch (1-based) whose training loss shows the speed (default 2)")
    args = ap.parse_args()
    runs = load(args.sweep)
    table = rho_table(runs)
    print("| case | " + " | ".join(f"ρ {x:g}" for x in sorted(next(iter(table.values())))) + " | slope / ln ρ |")
    print("|---|" + "---|" * (1 + len(next(iter(table.values())))))
    for case, pts in table.items():
        cells = [f"{100 * np.mean(pts[x]):.2f} ± {100 * np.std(pts[x], ddof=1):.2f}" for x in sorted(pts)]
        print(f"| {case} | " + " | ".join(cells) + f" | {slope(pts):+.2f} |")
    loss = early_loss(runs, args.loss_epoch - 1)
    print(f"\ntraining loss in epoch {args.loss_epoch} (mean over seeds):")
    for case, pts in loss.items():
        print(f"  {case}: " + ", ".join(f"ρ {x:g} {np.mean(pts[x]):.3f}" for x in sorted(pts)))
    delta_cases = {"same-batch": "grm-adam", "history": "grm-adam-history", "ema": "grm-adam-ema"}
    print()
    for label, case in {**delta_cases, "ema, update": "grm-update-ema"}.items():
        lg = lagging(runs, case)
        mu = ", ".join(f"{m} {lg['mu_mean'][m]:.2f}±{lg['mu_step_std'][m]:.2f}" for m in lg["mu_mean"])
        print(f"Δ {label} ({case}): lagging modality gets the largest μ on {100 * lg['lagging_gets_max_mu']:.0f} % "
              f"of {lg['steps']} steps; Spearman(μ, head loss) {lg['spearman_mu_headloss']:+.2f}; "
              f"mean μ (step-to-step std): {mu}")
    n = len(runs)
    print(f"\n{n} runs, {sum(r['result']['train_seconds'] for r in runs):.0f} s of training")
    if args.figure:
        figure(runs, delta_cases, ["grm-adam", "grm-sgd", "grm-update", "grm-update-ema"], args.figure, args.loss_epoch)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
