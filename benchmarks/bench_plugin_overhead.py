"""Cost of the BALM plug-in on one training step of a late-fusion MLP, IEMOCAP-sized input.

Side by side, interleaved repetitions, medians:
  plain      backbone step (forward, CE, backward, clip, Adam)
  fcm        the same with FCM only
  grm        the same with GRM only (stats left on the device)
  balm       the same with FCM + GRM (stats left on the device, read lazily)
  balm+item  the same, plus a per-modality ``.item()`` of every logged quantity each step
  balm+stats the same, plus one ``grm.stats`` read (a single host transfer) each step
and prints the ratios to ``plain``, where the BALM step spends its extra time, and a floor: the
cost, relative to the plain step, of two things any FCM of the paper's size adds whatever its
implementation (the gradient with respect to the encoders' inputs, which a learnt input gate
needs and the plain model never computes, and one Adam step over FCM's parameters).

Usage: python benchmarks/bench_plugin_overhead.py [--reps 8] [--steps 4] [--threads 1] [--device cpu] [--fused-adam]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
import torch.nn.functional as F

from balm.backbones.late_fusion import LateFusion
from balm.core import FeatureCalibration, GradientRebalancer
from balm.data.batch import Batch

DIMS = {"audio": 1582, "text": 1024, "visual": 342}
RATES = {"audio": 0.5, "text": 0.7, "visual": 0.3}
CLASSES = 6
LOGGED = ("kl", "delta", "mu", "cos", "grad_norm_before", "grad_norm_after", "head_loss")


def make_batch(device, B=16, mean_len=48, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(mean_len - 8, mean_len + 9, (B,), generator=g)
    T = int(lengths.max())
    valid = torch.arange(T)[None, :] < lengths[:, None]
    masks = {m: valid & (torch.rand(B, T, generator=g) >= r) for m, r in RATES.items()}
    feats = {m: torch.randn(B, T, d, generator=g) * masks[m][..., None] for m, d in DIMS.items()}
    labels = torch.randint(0, CLASSES, (B, T), generator=g) * valid
    batch = Batch(feats, masks, valid, torch.zeros(B, T, dtype=torch.long), labels, lengths)
    return batch.to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class Runner:
    def __init__(self, device, fcm: bool, grm: bool, stats_mode: str = "lazy", fused_adam=False, seed=0):
        torch.manual_seed(seed)
        self.model = LateFusion(DIMS, CLASSES).to(device)
        self.stats_mode = stats_mode
        params = list(self.model.parameters())
        self.fcm = FeatureCalibration(DIMS).to(device) if fcm else None
        self.grm = None
        if grm:
            self.grm = GradientRebalancer(
                self.model.encoders, self.model.embed_dims, self.model.fusion_head, num_classes=CLASSES
            )
        if fcm:
            params += list(self.fcm.parameters())
        self.params = params
        self.opt = torch.optim.Adam(params, lr=1e-3, **({"fused": True} if fused_adam else {}))
        self.sink = 0.0
        self.parts: dict[str, list[float]] = {"fcm": [], "rebalance": []}

    def step(self, batch: Batch, timed_parts=False):
        device = batch.valid.device
        if self.fcm is not None:
            t0 = time.perf_counter()
            feats = self.fcm(batch.features, batch.masks, batch.valid)
            if timed_parts:
                sync(device)
                self.parts["fcm"].append(time.perf_counter() - t0)
            batch = dataclasses.replace(batch, features=feats)
        out = self.model(batch)
        targets = batch.targets
        loss = F.cross_entropy(out.prediction, targets)
        if self.grm is not None:
            loss = loss + self.grm.alignment_loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grm is not None:
            t0 = time.perf_counter()
            self.grm.rebalance_(out.embeddings, out.prediction, targets, batch.flat_masks())
            if timed_parts:
                sync(device)
                self.parts["rebalance"].append(time.perf_counter() - t0)
            if self.stats_mode == "item":
                last = self.grm._last
                for key in LOGGED:
                    for i in range(len(DIMS)):
                        self.sink += last[key][i].item()
            elif self.stats_mode == "stats":
                self.sink += self.grm.stats["mu"]["audio"]
        torch.nn.utils.clip_grad_norm_(self.params, 2.0)
        self.opt.step()


def timed(runner: Runner, batch: Batch, steps: int) -> float:
    device = batch.valid.device
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        runner.step(batch)
    sync(device)
    return (time.perf_counter() - t0) / steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--fused-adam", action="store_true", help="use Adam(fused=True) in every configuration")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = make_batch(device)
    n = int(batch.valid.sum())
    print(f"device {device}, threads {args.threads}, Adam {'fused' if args.fused_adam else 'default'}; batch 16 dialogues, {n} utterances, dims {DIMS}, {CLASSES} classes")
    print("note: the machine may be shared with other jobs; timings are noisy, so medians of interleaved reps are used")
    fa = args.fused_adam
    runners = {
        "plain": Runner(device, fcm=False, grm=False, fused_adam=fa),
        "fcm": Runner(device, fcm=True, grm=False, fused_adam=fa),
        "grm": Runner(device, fcm=False, grm=True, fused_adam=fa),
        "balm": Runner(device, fcm=True, grm=True, stats_mode="lazy", fused_adam=fa),
        "balm+item": Runner(device, fcm=True, grm=True, stats_mode="item", fused_adam=fa),
        "balm+stats": Runner(device, fcm=True, grm=True, stats_mode="stats", fused_adam=fa),
    }
    for r in runners.values():  # warm-up
        timed(r, batch, 2)
    times = {k: [] for k in runners}
    ratios = {k: [] for k in runners if k != "plain"}
    order = list(runners)
    for rep in range(args.reps):
        rot = order[rep % len(order):] + order[: rep % len(order)]
        t = {k: timed(runners[k], batch, args.steps) for k in rot}
        for k in runners:
            times[k].append(t[k])
        for k in ratios:
            ratios[k].append(t[k] / t["plain"])
    print(f"\n{'config':<12} {'median step (ms)':>17} {'ratio to plain (median of reps)':>33}")
    for k in runners:
        med = statistics.median(times[k]) * 1e3
        ratio = "1.000" if k == "plain" else f"{statistics.median(ratios[k]):.3f}"
        print(f"{k:<12} {med:>17.2f} {ratio:>33}")
    item = statistics.median([a / b for a, b in zip(times["balm+item"], times["balm"])])
    stats = statistics.median([a / b for a, b in zip(times["balm+stats"], times["balm"])])
    print(f"\nper-modality .item() every step / lazy stats: {item:.3f}")
    print(f"one stats read every step        / lazy stats: {stats:.3f}")
    # where the extra time goes
    r = runners["balm"]
    for _ in range(args.steps * 2):
        r.step(batch, timed_parts=True)
    fcm_ms = statistics.median(r.parts["fcm"]) * 1e3
    reb_ms = statistics.median(r.parts["rebalance"]) * 1e3
    extra = (statistics.median(times["balm"]) - statistics.median(times["plain"])) * 1e3
    n_fcm = sum(p.numel() for p in r.fcm.parameters())
    n_model = sum(p.numel() for p in r.model.parameters())
    print(f"\nextra per step {extra:.2f} ms: FCM forward {fcm_ms:.2f} ms, rebalance_ {reb_ms:.2f} ms, "
          f"rest (FCM backward, Adam on FCM's {n_fcm / 1e6:.2f} M parameters vs the backbone's {n_model / 1e6:.2f} M) "
          f"{extra - fcm_ms - reb_ms:.2f} ms")

    floor(runners["plain"], r.fcm, batch, args)


def floor(plain: Runner, fcm: FeatureCalibration, batch: Batch, args) -> None:
    """Time, interleaved with the plain step, the work FCM adds by construction."""
    device = batch.valid.device
    n = int(batch.valid.sum())
    first = {m: plain.model.encoders[m][0].weight.detach() for m in DIMS}  # (hidden, d_m)
    delta = {m: torch.randn(n, w.shape[0], device=device) for m, w in first.items()}
    shadow = [torch.zeros_like(p, requires_grad=True) for p in fcm.parameters()]
    for t in shadow:
        t.grad = torch.randn_like(t)
    kwargs = {"fused": True} if args.fused_adam else {}
    opt = torch.optim.Adam(shadow, lr=1e-3, **kwargs)

    def input_grad():
        for m, w in first.items():
            delta[m] @ w

    def adam():
        opt.step()

    def clock(fn, steps):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        return (time.perf_counter() - t0) / steps

    clock(input_grad, 2), clock(adam, 2)
    ra, rb = [], []
    for _ in range(args.reps):
        tp = timed(plain, batch, args.steps)
        ra.append(clock(input_grad, args.steps) / tp)
        rb.append(clock(adam, args.steps) / tp)
    a, b = statistics.median(ra), statistics.median(rb)
    print(f"\nfloor of any FCM at d_global={fcm.d_global} (fractions of the plain step):")
    print(f"  gradient w.r.t. the encoders' inputs ({n} x hidden @ hidden x d_m): {a:.3f}")
    print(f"  one Adam step over FCM's {sum(t.numel() for t in shadow) / 1e6:.2f} M parameters:   {b:.3f}")
    print(f"  together: BALM / plain >= {1 + a + b:.3f}, before FCM's own forward and backward")


if __name__ == "__main__":
    main()
