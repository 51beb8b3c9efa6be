"""``balm sweep``: run the cartesian product of a sweep config, resumably, locally or on Ray."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run a grid of configurations (resumable; local processes or Ray)",
        description="Run every combination of the 'sweep:' lists of a sweep config. Finished runs "
        "(DIR/runs/<id>/result.json) are skipped; interrupted ones are restarted. DIR/summary.csv lists "
        "finished runs. See docs/experiments.md.",
    )
    p.add_argument("--config", required=True, metavar="SWEEP", help="sweep config (YAML or JSON) with a 'sweep:' mapping")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base key, or an axis with sweep.KEY=[...]; repeatable")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep folder")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="parallel runs (default 1)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="local processes or Ray tasks")
    p.add_argument("--ray-address", default=None, metavar="ADDR", help="Ray cluster address (default: start a local instance)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state; run nothing")
    p.add_argument("--max-runs", type=int, default=None, metavar="N",
                   help="allow a sweep of up to N runs (default limit 1000; a larger sweep is refused)")
    p.add_argument("--quiet", action="store_true", help="no per-run lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from balm.experiments.config import ConfigError
    from balm.experiments.rundir import is_done, is_finished
    from balm.experiments.sweep import check_runs, load_sweep, run_sweep

    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.max_runs is not None and args.max_runs < 1:
        raise ConfigError(f"--max-runs must be >= 1, got {args.max_runs}")
    sweep = load_sweep(args.config, args.overrides, max_runs=args.max_runs)
    if args.dry_run:
        check_runs(sweep.runs, source=sweep.source)
        for r in sweep.runs:
            d = Path(args.out) / "runs" / r.id
            state = ("finished" if is_finished(d, r.config) else "diverged" if is_done(d, r.config)
                     else "resumable" if (d.parent / f".{r.id}.partial" / "last.pt").is_file() else "to run")
            print(f"{r.id}\t{state}")
        print(f"{len(sweep.runs)} runs")
        return 0
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    try:
        res = run_sweep(sweep, args.out, workers=args.workers, backend=args.backend, ray_address=args.ray_address,
                        log=log)
    except RuntimeError as exc:
        print(f"balm sweep: error: {exc}", file=sys.stderr)
        return 1
    print(f"{res['total']} runs: {res['skipped']} already done, {res['ran']} ran, {len(res['failed'])} failed, "
          f"{len(res['diverged'])} diverged; summary in {args.out}/summary.csv")
    for f in res["failed"]:
        print(f"failed: {f['id']}: {f['error']} (see {args.out}/runs/{f['id']}/error.txt)", file=sys.stderr)
    for d in res["diverged"]:
        dv = d["diverged"]
        print(f"diverged: {d['id']}: epoch {dv['epoch']} step {dv['step']}: {dv['what']}", file=sys.stderr)
    return 1 if res["failed"] else 3 if res["diverged"] else 0
