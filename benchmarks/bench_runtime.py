"""Seconds per epoch and per run, and peak memory, of ``balm train`` for every backbone, plain and
with BALM, on the IEMOCAP-sized and MOSEI-sized synthetic sets; then the estimated time of every
reproduction sweep in ``configs/iemocap`` and ``configs/mosei``.

Each (data set, backbone, method) is one real ``train()`` (collate, forward, loss, backward, the
method's step, clipping, optimizer, the dev evaluation, the run log and resume checkpoint, and at
the end the test evaluation, Shapley values, predictions and checkpoint) in a fresh process with
one torch thread, for ``--epochs`` epochs. Per epoch: the median process CPU time of the epochs
after the first (with one thread, CPU time is what an idle machine's wall clock would be, also on
a shared machine); per run: the CPU time outside those epochs (start-up, data, model, the first
epoch's extra, the end-of-run work) plus the config's epochs times the epoch figure. Peak memory:
the process's maximum RSS (``ru_maxrss``: torch, the data set, everything), and the CUDA maximum
allocated with ``--device cuda``.

Hyper-parameters: ``configs/<set>/<backbone>.yaml`` where it exists; SDR-GNN and Mi-CGA take
their case of ``configs/<set>/table1x.yaml``; late fusion takes ``mmgcn.yaml`` with
``backbone: late_fusion``. ``method: none`` gives the plain backbone.

    python benchmarks/bench_runtime.py --out runtime.json           # about 20 min of CPU time
    python benchmarks/bench_runtime.py --sets iemocap --backbones mmgcn mmdfn --epochs 3
    python benchmarks/bench_runtime.py --sweeps runtime.json          # targets and sweep estimates only
    python benchmarks/bench_runtime.py --variants --out imr.json      # seconds per run of each
                                                                      # MMGCN variant (the IMR table)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

BACKBONES = ("late_fusion", "mmgcn", "mmdfn", "gcnet", "sdrgnn", "micga", "mmin", "momke", "redcore", "mce")
# backbones that train in two stages as methods of their own (method: none only): the option that sets
# the first stage's epochs, and the one that sets the second's (absent or None: the config's epochs)
STAGED = {"mmin": ("pretrain_epochs", None), "momke": ("experts_epochs", "router_epochs"),
          "mce": ("unimodal_epochs", "train_epochs")}
SETS = ("iemocap", "mosei")
TABLE = {"iemocap": "table11.yaml", "mosei": "table12.yaml"}
VARIANTS = ("none", "balm", "balm-d", "balm-s", "balm-m", "fcm-only")


def base_config(data_set: str, backbone: str) -> tuple[Path, list[str]]:
    """The config file and ``--set`` overrides that give ``backbone``'s hyper-parameters on ``data_set``."""
    folder = ROOT / "configs" / data_set
    own = folder / f"{backbone}.yaml"
    if own.exists():
        return own, []
    if backbone == "late_fusion":
        return folder / "mmgcn.yaml", ["backbone=late_fusion", "backbone_options={}"]
    from balm.experiments.config import read_mapping

    case = read_mapping(folder / TABLE[data_set])["sweep"]["cases"][backbone]
    return folder / "mmgcn.yaml", [f"{k}={json.dumps(v)}" for k, v in case.items() if k != "method"]


def stage_epochs(cfg) -> tuple[int, int]:
    """(first stage's epochs, second stage's) of a run of a STAGED backbone: its options, else the defaults."""
    import inspect

    from balm.backbones.registry import resolve_backbone

    first, second = STAGED[cfg.backbone]
    defaults = inspect.signature(resolve_backbone(cfg.backbone)).parameters
    n_first = cfg.backbone_options.get(first, defaults[first].default)
    n_second = cfg.backbone_options.get(second, defaults[second].default) if second else None
    return n_first, cfg.epochs if n_second is None else n_second


def child(key: str, epochs: int, device: str) -> None:
    """In a fresh process: one short run; prints ``RESULT {json}``."""
    import torch

    from balm.experiments.config import load_config
    from balm.experiments.trainer import train

    t_start = 0.0  # process CPU time counts from the start of the process (imports included)
    data_set, backbone, method = key.split(":")
    path, sets = base_config(data_set, backbone)
    full = load_config(path, sets)
    if backbone in STAGED:  # both stages timed, ``epochs`` each
        first, second = STAGED[backbone]
        options = {**full.backbone_options, first: epochs, **({second: None} if second else {})}
        sets = sets + [f"backbone_options={json.dumps(options)}"]
    cfg = load_config(path, sets + [f"method={method}", f"data=synthetic:{data_set}", f"epochs={epochs}",
                                    "threads=1", f"device={device}", "early_stopping=0"])
    marks, walls = [], []
    with tempfile.TemporaryDirectory() as tmp:
        t_run, w_run = time.process_time(), time.perf_counter()
        res = train(cfg, Path(tmp) / "run", quiet=True,
                    after_epoch=lambda e: (marks.append(time.process_time()), walls.append(time.perf_counter())))
        t_end, w_end = time.process_time(), time.perf_counter()
    epoch_cpu = [b - a for a, b in zip(marks, marks[1:])]
    epoch_wall = [b - a for a, b in zip(walls, walls[1:])]
    stage_cpu = None
    if backbone in STAGED:  # epoch i's time is marks[i] - marks[i-1]; each stage's first epoch is not timed
        stage_cpu = [statistics.median(epoch_cpu[:epochs - 1]), statistics.median(epoch_cpu[epochs:])]
        epoch_cpu = epoch_cpu[epochs:]
        epoch_wall = epoch_wall[epochs:]
    per_epoch = statistics.median(epoch_cpu)
    out = {
        "key": key, "config": str(path.relative_to(ROOT)), "sets": sets, "batch_size": cfg.batch_size,
        "config_epochs": full.epochs, "epochs_timed": len(epoch_cpu),
        "epoch_cpu_s": per_epoch, "epoch_wall_s": statistics.median(epoch_wall),
        # everything in train() but the epochs, counting the first epoch as an ordinary one
        "fixed_cpu_s": (t_end - t_run) - per_epoch * (len(epoch_cpu) + 1),
        "startup_cpu_s": t_run - t_start,
        "run_wall_s": w_end - w_run,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "status": res.get("status", "finished"),
    }
    if stage_cpu is None:
        out["run_cpu_s"] = out["fixed_cpu_s"] + per_epoch * full.epochs
    else:
        first_epochs, main_epochs = stage_epochs(full)
        out.update(stage_epoch_cpu_s=stage_cpu, config_epochs=f"{first_epochs} + {main_epochs}",
                   fixed_cpu_s=(t_end - t_run) - epochs * sum(stage_cpu))
        out["run_cpu_s"] = out["fixed_cpu_s"] + first_epochs * stage_cpu[0] + main_epochs * stage_cpu[1]
    if device.startswith("cuda"):
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(out), flush=True)


def measure(key: str, epochs: int, device: str) -> dict:
    cmd = [sys.executable, __file__, "--_child", key, "--epochs", str(epochs), "--device", device]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"run {key} failed:\n{res.stderr[-3000:]}")


def table(rows: list[dict]) -> str:
    lines = ["| set | backbone | method | batch | CPU s / epoch | wall s / epoch | epochs | s / run (est.) | peak RSS MB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        d, b, m = r["key"].split(":")
        cpu = (" / ".join(f"{v:.2f}" for v in r["stage_epoch_cpu_s"]) if "stage_epoch_cpu_s" in r
               else f"{r['epoch_cpu_s']:.2f}")  # a staged backbone: first stage / second stage
        lines.append(f"| {d} | {b} | {m} | {r['batch_size']} | {cpu} | {r['epoch_wall_s']:.2f} | "
                     f"{r['config_epochs']} | {r['run_cpu_s']:.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- targets
MMDFN_OVER_MMGCN = 1.5  # MM-DFN+BALM's epoch at most this times MMGCN+BALM's (IEMOCAP-sized set)
GCNET_SECONDS = 2.5  # GCNet+BALM CPU seconds per epoch, one thread
MMDFN_MB = 1024  # MM-DFN+BALM's whole-process peak
IMR_HOURS = 1.0  # the IMR variants table with --workers 2


def targets(rows: list[dict], workers: int = 2) -> list[str]:
    """The speed targets (docs/runtime.md) that ``rows`` measure: the figure, the target, met or not."""
    r = {row["key"]: row for row in rows}
    out = []

    def line(what, value, limit, fmt):
        out.append(f"target {what}: {fmt.format(value)} (target {fmt.format(limit)}) "
                   f"{'met' if value <= limit else 'MISSED'}")

    mmdfn, mmgcn = r.get("iemocap:mmdfn:balm"), r.get("iemocap:mmgcn:balm")
    if mmdfn and mmgcn:
        line("MM-DFN+BALM / MMGCN+BALM epoch, IEMOCAP-sized", mmdfn["epoch_cpu_s"] / mmgcn["epoch_cpu_s"],
             MMDFN_OVER_MMGCN, "{:.2f}x")
    if mmdfn:
        line("MM-DFN+BALM peak RSS, IEMOCAP-sized", mmdfn["peak_rss_mb"], MMDFN_MB, "{:.0f} MB")
    if "iemocap:gcnet:balm" in r:
        line("GCNet+BALM CPU s / epoch, IEMOCAP-sized, one thread", r["iemocap:gcnet:balm"]["epoch_cpu_s"],
             GCNET_SECONDS, "{:.2f}")
    variants = [r.get(f"iemocap:mmgcn:{v}") for v in VARIANTS]
    if all(variants):  # 30 runs of each variant (6 settings x 5 seeds), the run time measured per variant
        hours = sum(30 * v["run_cpu_s"] for v in variants) / 3600 / workers
        line(f"IMR variants table (180 runs) with --workers {workers}, estimated", hours, IMR_HOURS, "{:.2f} h")
    return out


# ---------------------------------------------------------------------------- sweeps
def run_seconds(cfg, measured: dict[str, dict]) -> tuple[float, str] | None:
    """Estimated seconds of one run: the measured (set, backbone, plain|BALM) figures, the run's epochs."""
    data_set = "mosei" if "mosei" in str(cfg.data) else "iemocap"
    plain = cfg.method == "none"  # every other method at BALM's cost (fcm-only is cheaper, baselines similar)
    key = f"{data_set}:{cfg.backbone}:{'none' if plain else 'balm'}"
    r = measured.get(key)
    if r is None:
        return None
    if "stage_epoch_cpu_s" in r:
        first, main = stage_epochs(cfg)
        return r["fixed_cpu_s"] + first * r["stage_epoch_cpu_s"][0] + main * r["stage_epoch_cpu_s"][1], key
    return r["fixed_cpu_s"] + cfg.epochs * r["epoch_cpu_s"], key


def sweep_estimates(measured: dict[str, dict], workers: int) -> str:
    from balm.experiments.sweep import load_sweep

    lines = [f"| sweep | runs | epochs / run | est. hours, 1 process | est. hours, --workers {workers} |",
             "|---|---:|---|---:|---:|"]
    for data_set in SETS:
        for path in sorted((ROOT / "configs" / data_set).glob("*.yaml")):
            from balm.experiments.config import read_mapping

            if "sweep" not in read_mapping(path):
                continue
            sw = load_sweep(path)
            total, missing = 0.0, 0
            for run in sw.runs:
                est = run_seconds(run.config, measured)
                if est is None:
                    missing += 1
                else:
                    total += est[0]
            epochs = sorted({r.config.epochs for r in sw.runs})
            note = f" ({missing} runs not measured)" if missing else ""
            lines.append(f"| {path.relative_to(ROOT)} | {len(sw.runs)} | {', '.join(map(str, epochs))} | "
                         f"{total / 3600:.1f}{note} | {total / 3600 / workers:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    p.add_argument("--methods", nargs="+", default=["none", "balm"], help="methods per backbone")
    p.add_argument("--variants", action="store_true", help="MMGCN on the IEMOCAP-sized set with each IMR-table variant")
    p.add_argument("--epochs", type=int, default=3, help="epochs per measured run (the first is not timed)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="write the measurements here (JSON)")
    p.add_argument("--sweeps", metavar="JSON", help="estimate the sweeps from these measurements and stop")
    p.add_argument("--workers", type=int, default=2, help="workers assumed for the sweep estimate")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        return child(args._child, args.epochs, args.device)
    if args.sweeps:
        rows = json.loads(Path(args.sweeps).read_text())
        print("\n".join(targets(rows, args.workers)))
        print(sweep_estimates({r["key"]: r for r in rows}, args.workers))
        return
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first epoch is not timed)")
    if args.variants:
        keys = [f"iemocap:mmgcn:{v}" for v in VARIANTS]
    else:
        keys = [f"{d}:{b}:{m}" for d in args.sets for b in args.backbones for m in args.methods
                if m == "none" or b not in STAGED]  # the staged backbones take method: none only
    rows = []
    for k in keys:
        print(f"  {k} ...", file=sys.stderr, flush=True)
        rows.append(measure(k, args.epochs, args.device))
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
    print(table(rows))
    print("\n".join(targets(rows, args.workers)))
    if not args.variants:
        print()
        print(sweep_estimates({r["key"]: r for r in rows}, args.workers))


if __name__ == "__main__":
    main()
