"""What a training run writes besides its model: ``stats.jsonl``, TensorBoard events, progress
lines, ``tsne.npz`` and the content of ``result.json`` (schema in docs/experiments.md)."""

from __future__ import annotations

import importlib.metadata
import math
import platform
import shutil
import sys
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from balm.core import functional as BF

from .config import Config
from balm.io import atomic_write, dumps_line
from .prepare import PreparedData

RESULT_SCHEMA = "balm-result/1"
OUTPUT_FILES = ("result.json", "checkpoint.pt", "stats.jsonl", "tsne.npz", "predictions.npz", "tb")


def fresh_output_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and remove the files of an earlier run in it (a rerun starts clean)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    return out


def versions() -> dict:
    try:
        balm_version = importlib.metadata.version("balm")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        import balm

        balm_version = balm.__version__
    return {
        "balm": balm_version,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


class Tensorboard:
    """TensorBoard scalars through ``torch.utils.tensorboard`` (needs the ``tensorboard`` package)."""

    def __init__(self, directory: Path | None):
        self.writer = None
        if directory is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the package is optional; result.json's files.tensorboard is then null
            warnings.warn("tensorboard is not installed: no TensorBoard files (stats.jsonl has the same values); "
                          "pip install -e '.[experiments]' from the clone, or set tensorboard: false", RuntimeWarning,
                          stacklevel=2)
            return
        self.writer = SummaryWriter(log_dir=str(directory))

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, dict):
                self.scalars(f"{prefix}/{k}", v, step)
            elif isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def encoder_grad_norms(encoders: nn.ModuleDict) -> dict[str, float]:
    """L2 norm of each encoder's whole gradient (before any modulation)."""
    grads = [[p.grad for p in enc.parameters() if p.grad is not None] for enc in encoders.values()]
    device = next(next(iter(encoders.values())).parameters()).device
    return dict(zip(encoders, BF.grad_norms(grads, device, torch.float32).tolist()))  # one host sync


class _NoBar:
    """Stands in for tqdm's bar when tqdm is not installed."""

    disable = True

    def __init__(self, *args, **kwargs):
        pass

    def update(self, *args, **kwargs):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass


class RunLog:
    """The record of one training run as it goes: a ``stats.jsonl`` line per step and per epoch,
    the same values as TensorBoard scalars, a progress bar (or a line per epoch through ``log``),
    and the per-epoch history and timings that ``result.json`` reports. Use it as a context
    manager around the epochs; :meth:`best` closes TensorBoard after the test evaluation."""

    def __init__(self, out: Path, cfg: Config, modalities: tuple[str, ...], *, quiet: bool,
                 log: Callable[[str], None] | None, resume: dict | None = None, total_epochs: int | None = None):
        """``resume``: a :meth:`state_dict` of an interrupted run in ``out`` to continue;
        ``total_epochs``: the most epochs the run can take (all stages; default ``cfg.epochs``)."""
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm (the experiments extra) only draws the progress bar
            tqdm = _NoBar

        self.tb = Tensorboard(out / "tb" if cfg.tensorboard else None)
        self.say = log or (lambda s: None)
        self.epochs = cfg.epochs if total_epochs is None else total_epochs
        self.modalities = modalities
        self.history: list[dict] = []
        self.epoch_seconds: list[float] = []
        self.steps = 0
        if resume is None:
            self._stats = open(out / "stats.jsonl", "w", encoding="utf-8")
        else:  # drop the lines written after the checkpoint, then append
            self.history, self.epoch_seconds, self.steps = list(resume["history"]), list(resume["epoch_seconds"]), resume["steps"]
            self._stats = open(out / "stats.jsonl", "r+", encoding="utf-8")
            self._stats.truncate(resume["stats_bytes"])
            self._stats.seek(resume["stats_bytes"])
        self._bar = tqdm(total=self.epochs, initial=len(self.history), desc="epochs", unit="ep",
                         disable=quiet or not sys.stderr.isatty(), leave=False)
        self._new_epoch()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self._stats.close()
        self._bar.close()

    def state_dict(self) -> dict:
        """What :meth:`__init__` needs to continue this log (``stats.jsonl`` flushed first)."""
        self._stats.flush()
        return {"history": list(self.history), "epoch_seconds": list(self.epoch_seconds), "steps": self.steps,
                "stats_bytes": self._stats.tell()}

    def _new_epoch(self) -> None:
        self._losses: list[float] = []
        self._norm_sums = {m: 0.0 for m in self.modalities}
        self._n_steps = 0

    def step(self, epoch: int, loss: torch.Tensor, task_loss: torch.Tensor, norms: dict[str, float], rebalancer) -> dict:
        """One optimisation step: losses, encoder gradient norms, the rebalancer's statistics.
        Returns the step's record (host floats: the caller checks them without another sync)."""
        record = {"kind": "step", "step": self.steps, "epoch": epoch, "loss": loss.item(), "task_loss": task_loss.item(),
                  "encoder_grad_norm": norms}
        if rebalancer is not None:
            record.update(rebalancer.stats)
        self._stats.write(dumps_line(record) + "\n")
        self.tb.scalars("train", {k: v for k, v in record.items() if k not in ("kind", "step", "epoch")}, self.steps)
        self._losses.append(record["loss"])
        for m, v in norms.items():
            self._norm_sums[m] += v
        self._n_steps += 1
        self.steps += 1
        return record

    def epoch(self, epoch: int, dev: dict, seconds: float, heads: dict[str, float] | None = None,
              stage: str | None = None) -> None:
        """The end of an epoch: mean training loss and gradient norms, the dev metrics, the time,
        ``heads``: the dev accuracy of each unimodal head of the rebalancer (if it has heads), and
        ``stage``: the stage's name, for a multi-stage backbone (on the record and the console line)."""
        self.epoch_seconds.append(seconds)
        train_loss = float(np.mean(self._losses)) if self._losses else float("nan")
        mean_norms = {m: v / max(self._n_steps, 1) for m, v in self._norm_sums.items()}
        hist = {"epoch": epoch, "train_loss": train_loss, "dev_acc": dev["acc"], "dev_wf1": dev["wf1"]}
        record = {"kind": "epoch", "epoch": epoch, "train_loss": train_loss, "dev_acc": dev["acc"],
                  "dev_wf1": dev["wf1"], "encoder_grad_norm": mean_norms, "seconds": seconds}
        if heads is not None:
            hist["dev_head_acc"] = record["dev_head_acc"] = heads
        if stage is not None:
            hist["stage"] = record["stage"] = stage
        self.history.append(hist)
        self._stats.write(dumps_line(record) + "\n")
        self._stats.flush()
        self.tb.scalars("epoch", {"train_loss": train_loss, "dev_acc": dev["acc"], "dev_wf1": dev["wf1"],
                                  "encoder_grad_norm": mean_norms, **({"dev_head_acc": heads} if heads else {})}, epoch)
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{train_loss:.4f}", dev_wf1=f"{dev['wf1']:.4f}")
        msg = (f"{'' if stage is None else stage + ' '}epoch {epoch} (of 0-{self.epochs - 1})  loss {train_loss:.4f}  dev acc {dev['acc']:.4f}  "
               f"dev w-f1 {dev['wf1']:.4f}  {seconds:.1f}s")
        if self._bar.disable:
            self.say(msg)
        else:
            self._bar.write(msg)
        self._new_epoch()

    def best(self, test: dict, best_epoch: int) -> None:
        """The selected model's test metrics (TensorBoard ``best/``); closes TensorBoard."""
        self.tb.scalars("best", {"test_acc": test["acc"], "test_wf1": test["wf1"]}, best_epoch)
        self.tb.close()


def _savez(path: str, arrays: dict) -> None:
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def write_tsne(path: Path, sample: dict) -> None:
    """``tsne.npz`` (compressed, atomic) from :func:`balm.experiments.evaluation.tsne_sample`'s arrays."""
    atomic_write(path, lambda tmp: _savez(tmp, sample))


def write_predictions(path: Path, arrays: dict) -> None:
    """``predictions.npz`` (compressed, atomic) from :func:`balm.experiments.diagnostics.prediction_arrays`."""
    atomic_write(path, lambda tmp: _savez(tmp, arrays))


def run_result(cfg: Config, data: PreparedData, log: RunLog, *, test: dict, best: dict, stopped_early: bool,
               device: torch.device, model: nn.Module, rebalancer, shapley: dict | None = None) -> dict:
    """The content of ``result.json`` (``schema: balm-result/1``, docs/experiments.md); ``shapley``:
    :func:`balm.experiments.diagnostics.shapley_report` of the selected model on test."""
    ds = data.dataset
    dev_best = None if best["dev"] is None else {k: v for k, v in best["dev"].items() if k != "report"}
    return {
        "schema": RESULT_SCHEMA,
        "status": "finished",
        "task": ds.task,
        "test": test,
        "dev": dev_best,
        "best_epoch": best["epoch"],
        "epochs_run": len(log.history),
        "stopped_early": stopped_early,
        "epoch_seconds": log.epoch_seconds,
        "train_seconds": float(sum(log.epoch_seconds)),
        "history": log.history,
        "dataset": {
            "spec": cfg.data,
            "name": ds.name,
            "modalities": list(data.all_modalities),
            "used_modalities": list(data.modalities),
            "num_classes": ds.num_classes,
            "label_names": ds.label_names,
            "sizes": {k: {"sequences": sp.num_sequences, "utterances": sp.num_utterances} for k, sp in ds.splits.items()},
        },
        "requested_rates": None if data.rates is None else dict(zip(data.all_modalities, data.rates)),
        "requested_test_rates": None if data.test_rates is None else dict(zip(data.all_modalities, data.test_rates)),
        "realised_rates": data.realised,
        "config": cfg.to_dict(),
        "versions": versions(),
        "device": str(device),
        "parameters": {
            "model": sum(p.numel() for p in model.parameters()),
            "heads": 0 if rebalancer is None else sum(p.numel() for p in rebalancer.parameters()),
        },
        "shapley": shapley,
        "files": {
            "checkpoint": "checkpoint.pt" if cfg.checkpoint else None,
            "predictions": "predictions.npz",
            "stats": "stats.jsonl",
            "tsne": "tsne.npz" if cfg.tsne_samples else None,
            "tensorboard": "tb" if log.tb.writer is not None else None,
        },
    }
