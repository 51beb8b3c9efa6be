"""Backbone training speed and memory, with and without BALM, fast vs loop-built graphs.

On the IEMOCAP-like synthetic training split (120 dialogues, 5810 utterances, dims
1582/1024/342, 6 classes) with masks at missing rates (r_A, r_L, r_V) = (0.5, 0.7, 0.3): audio 0.5, text 0.7, visual 0.3, batches of
16 dialogues, this times full training epochs (collate, FCM, forward, loss, backward, GRM,
clipping, optimizer step) for every backbone in the registry that imports, with the plain
backbone and with the "balm" variant. Where ``benchmarks/slow_<name>.py`` exists (exposing
``make_slow(model)``), the same model with its graph built the public code's way is timed too and
the speed-up printed. Configurations are interleaved over repeats and medians reported, since
the machine may be shared. Peak memory is measured per configuration in a fresh subprocess
(Linux peak RSS, reset after setup; CUDA: max_memory_allocated).

    python benchmarks/bench_backbones.py                 # all backbones, a few minutes on 2 cores
    python benchmarks/bench_backbones.py --quick         # 3 batches per timing, 1 repeat
    python benchmarks/bench_backbones.py --backbones mmgcn --epochs 2 --repeats 5

``--compare NAME`` instead times one speed change (benchmarks/_changes.py: the library's code
against the code it replaced, or against a candidate that was not taken) side by side: the real
``train()`` of a config on its synthetic data set, both ways interleaved over ``--repeats``, and
prints the CPU seconds per epoch of each, their ratio, and whether the two ways' results (every
epoch's dev metrics and the test metrics) are identical:

    python benchmarks/bench_backbones.py --compare eval-one-pass --repeats 5
    python benchmarks/bench_backbones.py --compare list
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from balm.backbones.registry import BACKBONES, build_backbone  # noqa: E402
from balm.data.batch import collate  # noqa: E402
from balm.data.dataset import Split  # noqa: E402

RATES = {"audio": 0.5, "text": 0.7, "visual": 0.3}
BATCH = 16
TARGET_SECONDS = {"mmgcn": 1.3}
TARGET_MB = 1024


# ---------------------------------------------------------------------------- data
def load_split(seed: int) -> tuple[Split, int, list[str]]:
    notes = []
    try:
        from balm.data.synthetic import make_synthetic

        ds = make_synthetic("iemocap", seed=seed)
        split, num_classes = ds.splits["train"], ds.num_classes
    except ImportError:
        notes.append("balm.data.synthetic not available: using an equivalent random set of the same sizes")
        rng = np.random.default_rng(seed)
        lengths = np.full(120, 5810 // 120)
        lengths[: 5810 - lengths.sum()] += 1
        n = int(lengths.sum())
        split = Split(
            name="train",
            features={m: rng.normal(size=(n, d)).astype(np.float32) for m, d in
                      (("audio", 1582), ("text", 1024), ("visual", 342))},
            labels=rng.integers(0, 6, n).astype(np.int64),
            speakers=rng.integers(0, 2, n).astype(np.int64),
            lengths=lengths.astype(np.int64),
            sequence_ids=[str(i) for i in range(120)],
        )
        num_classes = 6
    rates = [RATES.get(m, 0.5) for m in split.modalities]
    try:
        from balm.masking import make_masks

        mask = make_masks(split.num_utterances, rates, seed, strategy="paper")
    except ImportError:
        notes.append("balm.masking not available: Bernoulli masks")
        rng = np.random.default_rng(seed + 1)
        mask = rng.random((split.num_utterances, len(rates))) >= np.asarray(rates)
        mask[np.arange(len(mask)), rng.integers(0, len(rates), len(mask))] |= ~mask.any(1)
    return replace(split, mask=mask), num_classes, notes


# ---------------------------------------------------------------------------- configs
@dataclass
class Config:
    backbone: str
    impl: str  # "fast" or "slow"
    balm: bool

    @property
    def label(self) -> str:
        return f"{self.backbone:<12} {self.impl:<5} {'balm' if self.balm else 'plain':<5}"

    def key(self) -> str:
        return f"{self.backbone}:{self.impl}:{int(self.balm)}"

    @staticmethod
    def parse(key: str) -> "Config":
        b, i, m = key.split(":")
        return Config(b, i, bool(int(m)))


def available_backbones(names):
    out, skipped = [], []
    for name in names:
        module = BACKBONES[name].split(":")[0]
        try:
            importlib.import_module(module)
            out.append(name)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            skipped.append(name)
    return out, skipped


def slow_factory(name):
    path = HERE / f"slow_{name}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"slow_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_slow


class Trainer:
    """One configuration's model, optional BALM variant and optimizer."""

    def __init__(self, cfg: Config, split: Split, num_classes: int, device: torch.device, seed: int):
        from balm.methods import build_method

        torch.manual_seed(seed)
        dims = split.dims()
        model = build_backbone(cfg.backbone, dims, num_classes)
        self.model = (slow_factory(cfg.backbone)(model) if cfg.impl == "slow" else model).to(device)
        self.variant = None
        if cfg.balm:
            self.variant = build_method(
                "balm", dims=dims, encoders=model.encoders, embed_dims=model.embed_dims,
                fusion_head=model.fusion_head, task="classification", num_classes=num_classes,
                rho=1.4, tau=0.3, lr=3e-4, weight_decay=3e-5,
            )
            if self.variant.input_module is not None:
                self.variant.input_module.to(device)
            if self.variant.rebalancer is not None:
                self.variant.rebalancer.to(device)
        self.params = list(self.model.parameters())
        if self.variant is not None and self.variant.input_module is not None:
            self.params += list(self.variant.input_module.parameters())
        self.opt = torch.optim.Adam(self.params, lr=3e-4, weight_decay=3e-5)
        self.split, self.device = split, device
        self.rng = np.random.default_rng(seed)

    def step(self, idx, phases: dict | None = None):
        """One training step (Algorithm 1); ``phases`` accumulates CPU seconds per phase."""
        clock = [time.process_time()]

        def tick(name):
            if phases is not None:
                sync()
                now = time.process_time()
                phases[name] = phases.get(name, 0.0) + now - clock[0]
                clock[0] = now

        batch = collate(self.split, idx).to(self.device)
        tick("collate")
        if self.variant is not None and self.variant.input_module is not None:
            batch = replace(batch, features=self.variant.input_module(batch.features, batch.masks, batch.valid))
            tick("FCM forward")
        out = self.model(batch)
        tick("backbone forward")
        loss = nn.functional.cross_entropy(out.prediction, batch.targets)
        grm = self.variant.rebalancer if self.variant is not None else None
        if grm is not None:
            loss = loss + grm.alignment_loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        tick("backward (backbone + FCM)")
        if grm is not None:
            grm.rebalance_(out.embeddings, out.prediction, batch.targets, batch.flat_masks())
            tick("GRM rebalance_")
        nn.utils.clip_grad_norm_(self.params, 2.0)
        self.opt.step()
        tick("clip + optimizer step")

    def epoch(self, max_batches: int | None = None) -> tuple[float, float, int, int]:
        """Wall and CPU seconds for one epoch (or its first ``max_batches`` batches), batches run,
        batches per epoch."""
        self.model.train()
        order = self.rng.permutation(self.split.num_sequences)
        chunks = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
        run = chunks[:max_batches] if max_batches else chunks
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for idx in run:
            self.step(idx)
        sync()
        return time.perf_counter() - t0, time.process_time() - c0, len(run), len(chunks)


def sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child_memory(key, args):
    """Run in a fresh process: one (possibly truncated) epoch, print peak memory as JSON."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    split, num_classes, _ = load_split(args.seed)
    cfg = Config.parse(key)
    tr = Trainer(cfg, split, num_classes, device, args.seed)
    if cfg.impl == "fast":
        tr.epoch(max_batches=1)  # allocator warm-up
    out = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        tr.epoch(batches_for(cfg, args))
        out["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["delta_mb"] = out["peak_mb"] - base / 2**20
        out["kind"] = "cuda max_memory_allocated"
    else:
        reset = _reset_peak_rss()
        base = _status_kb("VmRSS")
        tr.epoch(batches_for(cfg, args))
        if reset and base is not None:
            peak = _status_kb("VmHWM")
            out["kind"] = "peak RSS (VmHWM reset after setup)"
        else:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            out["kind"] = "process max RSS (ru_maxrss)"
        out["peak_mb"] = peak / 1024
        out["delta_mb"] = (peak - (base or 0)) / 1024
    print("MEMORY " + json.dumps(out))


def measure_memory(cfg, args):
    cmd = [sys.executable, __file__, "--_child", cfg.key(), "--device", args.device,
           "--threads", str(args.threads), "--seed", str(args.seed), "--slow-batches", str(args.slow_batches)]
    if args.max_batches:
        cmd += ["--max-batches", str(args.max_batches)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in res.stdout.splitlines():
        if line.startswith("MEMORY "):
            return json.loads(line[7:])
    raise RuntimeError(f"memory run for {cfg.key()} failed:\n{res.stderr[-2000:]}")


# ---------------------------------------------------------------------------- --compare
def compare(args) -> None:
    """Time change ``args.compare`` both ways, interleaved; print the per-epoch CPU ratio."""
    sys.path.insert(0, str(HERE))
    from _changes import CHANGES

    from balm.experiments.config import load_config
    from balm.experiments.trainer import train

    if args.compare == "list" or args.compare not in CHANGES:
        if args.compare != "list":
            print(f"unknown change {args.compare!r}")
        for name, ch in CHANGES.items():
            print(f"  {name:<16} {'taken' if ch.taken else 'candidate'}: {ch.about} ({ch.a} / {ch.b}; {ch.config})")
        return
    ch = CHANGES[args.compare]
    path = args.config or str(HERE.parent / ch.config)
    like = "mosei" if "mosei" in path else "iemocap"
    cfg = load_config(path, [f"data=synthetic:{like}", f"epochs={args.compare_epochs}", f"threads={args.threads}",
                             "tsne_samples=0", "early_stopping=0"] + list(args.set or []))
    torch.set_num_threads(args.threads)
    ways = {ch.a: ch.way_a, ch.b: ch.way_b}
    per_epoch, results = {k: [] for k in ways}, {}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name in (list(ways) if rep % 2 == 0 else list(ways)[::-1]):
                marks = []
                print(f"  repeat {rep + 1}/{args.repeats}: {name}", file=sys.stderr, flush=True)
                with ways[name]():
                    res = train(cfg, Path(tmp) / "run", quiet=True, overwrite=True,
                                after_epoch=lambda e: marks.append(time.process_time()))
                per_epoch[name] += [b - a for a, b in zip(marks, marks[1:])]  # the first epoch is not timed
                results[name] = (res["history"], res.get("test"))
    a, b = list(ways)
    ma, mb = float(np.median(per_epoch[a])), float(np.median(per_epoch[b]))
    print(f"{args.compare}: {ch.about}\nconfig {path} on synthetic:{like}, {args.compare_epochs} epochs x "
          f"{args.repeats} repeats per way, torch threads {args.threads}; median CPU s per epoch (epochs after the first)")
    for k, m in ((a, ma), (b, mb)):
        v = per_epoch[k]
        print(f"  {k:<12} {m:7.3f}  [{min(v):.3f}-{max(v):.3f}] over {len(v)} epochs")
    print(f"ratio {b} / {a}: {mb / ma:.3f}")
    same = results[a] == results[b]
    print(f"results identical (every epoch's dev metrics, test metrics): {'yes' if same else 'NO'}")
    if not same:
        da = [h["dev_wf1"] for h in results[a][0]]
        db = [h["dev_wf1"] for h in results[b][0]]
        print(f"  dev W-F1 per epoch: {a} {np.round(da, 4).tolist()}  {b} {np.round(db, 4).tolist()}")


# ---------------------------------------------------------------------------- main
def profile_epoch(tr, args, top=15):
    """Per-phase CPU seconds of one epoch, then torch.profiler's top operators of another."""
    from torch.profiler import ProfilerActivity, profile

    tr.model.train()
    order = tr.rng.permutation(tr.split.num_sequences)
    chunks = [order[i : i + BATCH] for i in range(0, len(order), BATCH)][: args.max_batches]
    phases = {}
    for idx in chunks:
        tr.step(idx, phases)
    total = sum(phases.values())
    lines = [f"  {k:<28} {v:7.3f} s  {100 * v / total:5.1f} %" for k, v in phases.items()]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for idx in chunks:
            tr.step(idx)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=48)
    return "CPU time per phase over one epoch:\n" + "\n".join(lines) + "\n\ntop operators (torch.profiler):\n" + table


def batches_for(cfg, args):
    """Batches timed per epoch for ``cfg`` (None = whole epoch)."""
    if cfg.impl == "slow" and args.slow_batches:
        return min(args.slow_batches, args.max_batches or args.slow_batches)
    return args.max_batches


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=sorted(BACKBONES), help="registry names")
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per configuration and repeat")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (medians are reported)")
    p.add_argument("--quick", action="store_true", help="1 repeat, 3 batches per timing (extrapolated)")
    p.add_argument("--no-slow", action="store_true", help="skip the loop-built graph versions")
    p.add_argument("--slow-batches", type=int, default=1,
                   help="batches timed per repeat for the loop-built versions, extrapolated to an "
                        "epoch (0: whole epochs)")
    p.add_argument("--slow-repeats", type=int, default=1, help="repeats timed for the loop-built versions")
    p.add_argument("--no-memory", action="store_true", help="skip the per-configuration memory runs")
    p.add_argument("--slow-memory", action="store_true", help="also measure the loop-built versions' memory")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batches", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--compare", metavar="NAME", help="time one speed change both ways (list: show them)")
    p.add_argument("--config", help="--compare: the config (default: the change's own)")
    p.add_argument("--set", action="append", help="--compare: a config override KEY=VALUE (repeatable)")
    p.add_argument("--compare-epochs", type=int, default=4, help="--compare: epochs per run (the first is not timed)")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.compare:
        return compare(args)
    unknown = [b for b in args.backbones if b not in BACKBONES]
    if unknown:
        p.error(f"unknown backbone(s) {unknown}; choose from {sorted(BACKBONES)}")
    if args.quick:
        args.repeats, args.max_batches = 1, args.max_batches or 3
    if args._child:
        return child_memory(args._child, args)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    split, num_classes, notes = load_split(args.seed)
    names, skipped = available_backbones(args.backbones)
    print(f"device {device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"data: train split {split.num_sequences} dialogues / {split.num_utterances} utterances, dims "
          f"{split.dims()}, {num_classes} classes, missing rates "
          f"{dict((m, RATES.get(m)) for m in split.modalities)}, batch {BATCH} dialogues")
    for n in notes:
        print("note:", n)
    for s in skipped:
        print(f"note: backbone {s!r} does not import yet; skipped")

    configs, slow_available = [], {}
    for name in names:
        slow_available[name] = not args.no_slow and slow_factory(name) is not None
        for impl in ["fast"] + (["slow"] if slow_available[name] else []):
            for balm in (False, True):
                configs.append(Config(name, impl, balm))
    trainers = {c.key(): Trainer(c, split, num_classes, device, args.seed) for c in configs}
    for c in configs:  # warm-up, untimed (the loop-built versions need none)
        if c.impl == "fast":
            trainers[c.key()].epoch(max_batches=1)

    times = {c.key(): [] for c in configs}
    cpu = {c.key(): [] for c in configs}
    for rep in range(args.repeats):
        order = configs[rep % len(configs):] + configs[: rep % len(configs)]
        for c in order:
            if c.impl == "slow" and rep >= args.slow_repeats:
                continue
            print(f"  repeat {rep + 1}/{args.repeats}: {c.label.split()}", file=sys.stderr, flush=True)
            for _ in range(args.epochs):
                secs, cpu_secs, ran, total = trainers[c.key()].epoch(batches_for(c, args))
                times[c.key()].append(secs * total / ran)
                cpu[c.key()].append(cpu_secs * total / ran)
    mem = {} if args.no_memory else {
        c.key(): measure_memory(c, args) for c in configs if c.impl == "fast" or args.slow_memory
    }

    extrap = " (extrapolated from the first batches)" if args.max_batches else ""
    if args.slow_batches and any(c.impl == "slow" for c in configs):
        extrap += (f"; loop-built versions: {batches_for(Config('', 'slow', False), args)} batch(es) per repeat, "
                   f"extrapolated")
    print(f"\nseconds per training epoch{extrap}: median over {args.repeats} x {args.epochs} "
          f"({min(args.slow_repeats, args.repeats)} x {args.epochs} for loop-built versions), wall clock "
          f"[min-max] and process CPU time (with 1 thread, CPU time is what an idle machine's wall clock would be)")
    kind = next(iter(mem.values()))["kind"] if mem else ""
    if mem and not args.slow_memory:
        kind += "; loop-built versions: see --slow-memory"
    print(f"{'backbone':<12} {'graph':<5} {'BALM':<5} {'wall s':>8} {'range':>13} {'CPU s':>7} "
          f"{'peak MB':>8} {'epoch +MB':>9}   memory: {kind}")
    med, med_wall = {}, {}
    for c in configs:
        t = np.asarray(times[c.key()])
        med_wall[c.key()] = float(np.median(t))
        med[c.key()] = float(np.median(cpu[c.key()])) if args.threads == 1 else med_wall[c.key()]
        m = mem.get(c.key(), {})
        print(f"{c.label} {med_wall[c.key()]:8.3f} {f'[{t.min():.2f}-{t.max():.2f}]':>13} "
              f"{float(np.median(cpu[c.key()])):7.3f} "
              f"{m.get('peak_mb', float('nan')):8.0f} {m.get('delta_mb', float('nan')):9.0f}")
    basis = "CPU" if args.threads == 1 else "wall-clock"
    print(f"\nratios (of {basis} medians)")

    for name in names:
        plain, balm = med[f"{name}:fast:0"], med[f"{name}:fast:1"]
        print(f"  {name}: BALM / plain time {balm / plain:.2f}x")
        if slow_available[name]:
            for b in (0, 1):
                print(f"  {name}{' +BALM' if b else ''}: loop-built graph / vectorised "
                      f"{med[f'{name}:slow:{b}'] / med[f'{name}:fast:{b}']:.1f}x speed-up")

    missed = []
    for name, target in TARGET_SECONDS.items():
        if name in names:
            k = f"{name}:fast:1"
            ok_t = med[k] <= target
            ok_m = (mem[k]["peak_mb"] < TARGET_MB) if mem else True
            print(f"target {name}+BALM <= {target} s/epoch ({basis} time): {med[k]:.3f} {'met' if ok_t else 'MISSED'}"
                  + (f"; peak < {TARGET_MB} MB: {mem[k]['peak_mb']:.0f} {'met' if ok_m else 'MISSED'}" if mem else ""))
            if not ok_t:
                missed.append(k)
    for k in missed:
        print(f"\nprofile of {k} (the configuration that missed its target):")
        print(profile_epoch(trainers[k], args))


if __name__ == "__main__":
    main()
