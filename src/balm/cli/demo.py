"""``balm demo``: a backbone against backbone + BALM on synthetic IEMOCAP-like data, two IMR
settings, two seeds, a few epochs, two local workers; prints the table and writes the figures.

It is an ordinary resumable sweep in ``OUT`` (run it again and finished runs are skipped).
"""

from __future__ import annotations

import sys
import time

# (r_A, r_L, r_V) of the paper's tables, written per modality name
DEMO_RATES = [
    {"audio": 0.5, "text": 0.7, "visual": 0.3},
    {"audio": 0.3, "text": 0.5, "visual": 0.7},
]


def demo_sweep(backbone: str = "mmgcn", epochs: int = 8) -> dict:
    """The demo's sweep config (the same keys as a sweep file)."""
    return {
        "data": "synthetic:iemocap",
        "backbone": backbone,
        "epochs": epochs,
        "batch_size": 16,
        "lr": 0.001,
        "weight_decay": 3e-5,
        "tau": 0.3,
        "rho": 1.4,
        "tsne_samples": 300,
        "sweep": {"rates": DEMO_RATES, "method": ["none", "balm"], "seed": [0, 1]},
    }


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="MMGCN vs MMGCN+BALM on synthetic IEMOCAP-like data (a few minutes on 2 CPU cores)",
        description="Train a backbone with and without BALM at IMR (r_A, r_L, r_V) = (0.5, 0.7, 0.3) and "
        "(0.3, 0.5, 0.7), two seeds each, on synthetic IEMOCAP-like data; print the table; write figures.",
    )
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default demo_out)")
    p.add_argument("--backbone", default="mmgcn", help="backbone (default mmgcn)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs per run (default 8)")
    p.add_argument("--workers", type=int, default=2, help="parallel runs (default 2)")
    p.set_defaults(func=run)


def run(args) -> int:
    from balm.experiments.sweep import expand, run_sweep
    from balm.reporting.report import make_report

    from balm.features.deps import require

    for module, package in (("matplotlib", None), ("sklearn", "scikit-learn")):  # the report's, before any run
        require(module, package, extra="experiments", purpose="balm demo's report")
    t0 = time.perf_counter()
    sweep = expand(demo_sweep(args.backbone, args.epochs), source="balm demo")
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    say(f"balm demo: {len(sweep.runs)} runs ({args.backbone} with and without BALM, 2 IMR settings x 2 seeds, "
        f"{args.epochs} epochs) with {args.workers} workers into {args.out}/")
    res = run_sweep(sweep, args.out, workers=args.workers, log=say)
    rep = make_report(args.out, tsne="first")
    print()
    print(rep["table"])
    print(f"report:  {rep['markdown']}")
    print(f"summary: {args.out}/summary.csv")
    print("figures:")
    for f in rep["figures"]:
        print(f"  {f}")
    print(f"done in {time.perf_counter() - t0:.0f}s ({res['skipped']} runs were already finished)")
    return 1 if res["failed"] else 0
