"""``balm demo``: a plain backbone against backbone + BALM where the evidence says BALM helps:
late fusion on the synthetic CMU-MOSEI-like set (docs/compare.md measured +2 to +5 W-F1 for the
BALM family in every IMR setting there; on the IEMOCAP-like set and on real MOSI it does not
help, see docs/compare.md and docs/real-data.md). Two IMR settings, two seeds, four epochs, two
local workers; prints the table, one sentence computed from its numbers, and the figures
(whose curves show the plain model beside BALM).

It is an ordinary resumable sweep in ``OUT`` (run it again and finished runs are skipped).
``--data iemocap`` runs the same grid on the IEMOCAP-like set, where BALM does not help.
"""

from __future__ import annotations

import sys
import time

# (r_A, r_L, r_V) of the paper's tables, written per modality name
DEMO_RATES = [
    {"audio": 0.5, "text": 0.7, "visual": 0.3},
    {"audio": 0.3, "text": 0.5, "visual": 0.7},
]

# hyper-parameters of configs/compare/synthetic/*.yaml (the runs behind docs/compare.md)
DEMO_DATA = {
    "mosei": {"data": "synthetic:mosei", "epochs": 4, "batch_size": 32, "lr": 0.001, "tau": 0.4, "rho": 1.6},
    "iemocap": {"data": "synthetic:iemocap", "epochs": 20, "batch_size": 16, "lr": 0.0003, "tau": 0.3, "rho": 1.4},
}


def demo_sweep(backbone: str = "late_fusion", epochs: int | None = None, data: str = "mosei") -> dict:
    """The demo's sweep config (the same keys as a sweep file)."""
    if data not in DEMO_DATA:
        raise ValueError(f"data must be one of {sorted(DEMO_DATA)}, got {data!r}")
    d = dict(DEMO_DATA[data])
    if epochs is not None:
        d["epochs"] = epochs
    return {
        **d,
        "backbone": backbone,
        "weight_decay": 3e-5,
        "grad_clip": 2.0,
        "noise": False,
        "early_stopping": 0,
        "checkpoint": False,
        "tsne_samples": 300,
        "sweep": {"rates": DEMO_RATES, "method": ["none", "balm"], "seed": [0, 1]},
    }


def what_the_table_shows(pairs: list[dict], plain: str, method: str) -> str:
    """One sentence from paired runs: each pair is ``{"setting", "seed", "plain", "method"}`` with
    the two models' test W-F1 (fractions) on the same setting, seed and masks."""
    if not pairs:
        return f"No finished pair of {plain} and {method} runs to compare."
    diffs = [100 * (p["method"] - p["plain"]) for p in pairs]
    mean = sum(diffs) / len(diffs)
    ahead = sum(d > 0 for d in diffs)
    by_setting: dict[str, list[float]] = {}
    for p, d in zip(pairs, diffs):
        by_setting.setdefault(p["setting"], []).append(d)
    means = {s: sum(v) / len(v) for s, v in by_setting.items()}
    won = sum(v > 0 for v in means.values())
    if ahead == len(diffs):
        verdict = f"{method} beats {plain} in every pair"
    elif ahead == 0:
        verdict = f"{method} loses to {plain} in every pair"
    else:
        verdict = f"{method} is ahead of {plain} in {ahead} of {len(diffs)} pairs"
    lo, hi = min(means.values()), max(means.values())
    spread = f"{lo:+.2f}" if len(means) == 1 else f"{lo:+.2f} to {hi:+.2f}"
    return (f"{verdict}: test W-F1 {mean:+.2f} points on average (per setting {spread}; "
            f"ahead in {won} of {len(means)} setting(s), {len(diffs)} paired runs).")


def demo_pairs(runs, keys: list[str]) -> list[dict]:
    """Pairs of (plain, BALM) runs of a finished demo sweep sharing setting and seed."""
    from balm.reporting.tables import setting_label

    cells: dict[tuple, dict] = {}
    for r in runs:
        key = (setting_label(r, keys), r.config["seed"])
        cells.setdefault(key, {})[r.config["method"]] = r.result["test"]["wf1"]
    return [{"setting": ", ".join(s), "seed": seed, "plain": v["none"], "method": v["balm"]}
            for (s, seed), v in cells.items() if "none" in v and "balm" in v]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="late fusion vs late fusion + BALM on synthetic MOSEI-like data, where BALM helps (a few minutes)",
        description="Train a backbone with and without BALM at IMR (r_A, r_L, r_V) = (0.5, 0.7, 0.3) and "
        "(0.3, 0.5, 0.7), two seeds each, on synthetic CMU-MOSEI-like data (where docs/compare.md finds BALM "
        "ahead); print the table and what it shows; write figures with the plain model beside BALM. "
        "--data iemocap runs the IEMOCAP-like set, where BALM does not help.",
    )
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default demo_out)")
    p.add_argument("--backbone", default="late_fusion", help="backbone (default late_fusion)")
    p.add_argument("--data", default="mosei", choices=sorted(DEMO_DATA), help="synthetic set (default mosei)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per run (default 4 on mosei, 20 on iemocap)")
    p.add_argument("--workers", type=int, default=2, help="parallel runs (default 2)")
    p.set_defaults(func=run)


def run(args) -> int:
    from balm.experiments.sweep import expand, run_sweep
    from balm.reporting.report import make_report
    from balm.reporting.tables import load_results, setting_keys

    from balm.features.deps import require

    for module, package in (("matplotlib", None), ("sklearn", "scikit-learn")):  # the report's, before any run
        require(module, package, extra="experiments", purpose="balm demo's report")
    t0 = time.perf_counter()
    spec = demo_sweep(args.backbone, args.epochs, args.data)
    sweep = expand(spec, source="balm demo")
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    say(f"balm demo: {len(sweep.runs)} runs ({args.backbone} with and without BALM on {spec['data']}, 2 IMR "
        f"settings x 2 seeds, {spec['epochs']} epochs) with {args.workers} workers into {args.out}/")
    res = run_sweep(sweep, args.out, workers=args.workers, log=say)
    rep = make_report(args.out, tsne="first")
    runs = load_results(args.out)
    sentence = what_the_table_shows(demo_pairs(runs, setting_keys(runs)), args.backbone, f"{args.backbone}+balm")
    print()
    print(rep["table"])
    print(sentence)
    print()
    print(f"report:  {rep['markdown']}")
    print(f"summary: {args.out}/summary.csv")
    print("figures (curves_*: BALM's KL, cosine and μ, and its loss, gradient norms and dev W-F1 beside the plain model):")
    for f in rep["figures"]:
        print(f"  {f}")
    print(f"done in {time.perf_counter() - t0:.0f}s ({res['skipped']} runs were already finished)")
    return 1 if res["failed"] else 0
