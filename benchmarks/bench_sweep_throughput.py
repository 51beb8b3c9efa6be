"""Sweep throughput: runs per hour of the same sweep with different ``--workers``, side by side.

Each measurement is a real ``balm sweep`` (a fresh folder, ``--runs`` seeds of one config, every
worker a separate process with one torch thread) timed by the wall clock from start to the last
result; the table gives runs per hour and the speed-up over the first worker count. On a CPU the
scaling shows whether ``--workers N`` divides a sweep's time by N (docs/runtime.md's sweep
estimates assume it); on a GPU (``--device cuda``) how many runs one device holds before the
per-run time grows (docs/scaling.md's worker advice).

    python benchmarks/bench_sweep_throughput.py --workers 1 2 --runs 4 --epochs 3
    python benchmarks/bench_sweep_throughput.py --device cuda --workers 1 4 8 --runs 16 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def sweep_file(folder: Path, config: Path, runs: int, epochs: int, device: str, data: str) -> Path:
    """A sweep over ``runs`` seeds of ``config`` (its other keys as they are)."""
    path = folder / "throughput.yaml"
    body = {"base": str(config.resolve()), "data": data, "epochs": epochs, "device": device,
            "early_stopping": 0, "checkpoint": False, "tsne_samples": 0, "tensorboard": False,
            "sweep": {"seed": list(range(runs))}}
    path.write_text(json.dumps(body))  # JSON is YAML
    return path


def time_sweep(spec: Path, out: Path, workers: int, sets: list[str]) -> float:
    cmd = [sys.executable, "-m", "balm.cli.main", "sweep", "--config", str(spec), "--out", str(out),
           "--workers", str(workers), "--quiet"] + [a for s in sets for a in ("--set", s)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"balm sweep --workers {workers} failed:\n{res.stderr[-3000:]}")
    return wall


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "iemocap" / "mmgcn.yaml"))
    p.add_argument("--data", default="synthetic:iemocap")
    p.add_argument("--set", action="append", default=[], help="a config override KEY=VALUE (repeatable)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=4, help="runs (seeds) per sweep")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = sweep_file(Path(tmp), Path(args.config), args.runs, args.epochs, args.device, args.data)
        for n in args.workers:
            print(f"  --workers {n} ...", file=sys.stderr, flush=True)
            rows.append((n, time_sweep(spec, Path(tmp) / f"w{n}", n, args.set)))
    print(f"{args.runs} runs of {args.config} ({args.data}, {args.epochs} epochs, device {args.device}) per sweep")
    print("| workers | wall s | runs / hour | speed-up over the first |\n|---:|---:|---:|---:|")
    for n, wall in rows:
        print(f"| {n} | {wall:.1f} | {3600 * args.runs / wall:.0f} | {rows[0][1] / wall:.2f}x |")


if __name__ == "__main__":
    main()
