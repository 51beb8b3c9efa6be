"""Train one configuration: data, model, the BALM training step, model selection, outputs.

The loop follows Algorithm 1 (DESIGN §4) step by step::

    x̂ = FCM(x̃)                          (variants with FCM)
    out = backbone(x̂)                    prediction, z^m, h
    L = L_task(out.prediction, y) + τ L_mod        (rebalancer.alignment_loss())
    L.backward()
    rebalancer.rebalance_(z, ŷ.detach(), y, e)     heads step, Δ, μ, scale φ^m's gradients
    clip_grad_norm_(max_norm=grad_clip)
    optimizer.step()

The epoch with the best validation weighted-F1 is kept (the test split is never looked at during
training) and evaluated on test. Outputs of ``train(config, out_dir)`` (docs/experiments.md):
``result.json`` (written last, atomically), ``checkpoint.pt``, ``stats.jsonl``, ``tsne.npz``
and TensorBoard events in ``tb/``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from balm.data.batch import Batch, collate
from balm.data.dataset import Dataset, Split

from . import metrics as MX
from .config import Config, backbone_parameters, check_against_dataset, rates_in_order, resolve_modalities
from .io import atomic_write, atomic_write_json, dumps_line

RESULT_SCHEMA = "balm-result/1"
CHECKPOINT_FORMAT = "balm-checkpoint/2"  # 2: MMGCN text encoder and MM-DFN layers renamed (shared BiRNN, GCNIIConv)

# --------------------------------------------------------------------------- data


@dataclass
class PreparedData:
    """The dataset as a run sees it: dev split ensured, masks drawn, modalities selected."""

    dataset: Dataset
    all_modalities: tuple[str, ...]
    modalities: tuple[str, ...]
    rates: list[float] | None
    realised: dict[str, dict[str, float]]  # split -> modality -> realised missing rate (all modalities)
    test_rates: list[float] | None = None


_DATA_CACHE: dict[str, Dataset] = {}


def load_base(spec: str) -> Dataset:
    """``balm.data.load(spec)``, cached per process (a sweep worker reuses it across runs)."""
    if spec not in _DATA_CACHE:
        from balm.data import load

        if len(_DATA_CACHE) >= 2:
            _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        _DATA_CACHE[spec] = load(spec)
    return _DATA_CACHE[spec]


def check_config(cfg: Config, dataset: Dataset | None = None) -> Dataset:
    """Load (or take) the dataset and run the dataset-dependent checks; returns the dataset."""
    ds = dataset if dataset is not None else load_base(cfg.data)
    check_against_dataset(cfg, ds.task, ds.modalities, ds.num_classes)
    return ds


_BUILT: set[str] = set()


def check_buildable(cfg: Config, dataset: Dataset | None = None) -> None:
    """Build the model of ``cfg`` once on the CPU (cached per architecture) so that an option the
    backbone or the variant rejects fails before any work, as a ConfigError."""
    import json as _json

    from .config import ConfigError

    ds = check_config(cfg, dataset)
    selected, _ = resolve_modalities(cfg, ds.modalities)
    dims = {m: d for m, d in ds.dims().items() if m in selected}
    meta = {"task": ds.task, "dims": dims, "num_classes": ds.num_classes, "label_names": ds.label_names,
            "modalities": list(selected), "num_speakers": _num_speakers(ds)}
    key = _json.dumps([meta, cfg.backbone, cfg.backbone_options, cfg.variant, cfg.d_global, cfg.modulation_start,
                       cfg.modulation_end], sort_keys=True, default=str)
    if key in _BUILT:
        return
    try:
        build_model(cfg, meta, torch.device("cpu"))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot build {cfg.backbone} + {cfg.variant} for modalities {list(selected)}: {exc}",
                          key="backbone_options" if cfg.variant == "none" else "variant") from None
    _BUILT.add(key)


def prepare_data(cfg: Config, dataset: Dataset | None = None) -> PreparedData:
    """Dev split (seeded by ``mask_seed``), masks M(·; r) per split, then the modality subset."""
    from balm.data import apply_masks, ensure_dev
    from balm.masking import realised_rates

    base = check_config(cfg, dataset)
    selected, rates = resolve_modalities(cfg, base.modalities)
    seed = cfg.effective_mask_seed
    complete = ensure_dev(base, ratio=cfg.dev_ratio, seed=seed)
    ds = complete if rates is None else apply_masks(complete, rates, seed, cfg.mask_strategy)
    test_rates = rates_in_order(cfg.test_rates, base.modalities, "test_rates")
    if test_rates is not None:
        tested = apply_masks(complete, test_rates, seed, cfg.mask_strategy)
        ds = dataclasses.replace(ds, splits={**ds.splits, "test": tested.splits["test"]})
    realised = {}
    for name, sp in ds.splits.items():
        r = np.zeros(len(ds.modalities)) if sp.mask is None else realised_rates(sp.mask)
        realised[name] = {m: float(v) for m, v in zip(ds.modalities, r)}
    if selected != ds.modalities:
        ds = dataclasses.replace(ds, splits={k: sp.subset_modalities(selected) for k, sp in ds.splits.items()})
    return PreparedData(ds, tuple(base.modalities), tuple(selected), rates, realised, test_rates)


# --------------------------------------------------------------------------- model


class BalmModel(nn.Module):
    """A backbone with an optional FCM in front: ``forward(batch) = backbone(FCM(batch))``."""

    def __init__(self, backbone: nn.Module, fcm: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.fcm = fcm

    def calibrate(self, batch: Batch) -> Batch:
        """The batch with calibrated features x̂ (unchanged without FCM)."""
        if self.fcm is None:
            return batch
        return dataclasses.replace(batch, features=self.fcm(batch.features, batch.masks, batch.valid))

    def forward(self, batch: Batch):
        return self.backbone(self.calibrate(batch))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _num_speakers(ds: Dataset) -> int:
    top = max((int(sp.speakers.max()) + 1 for sp in ds.splits.values() if sp.speakers.size), default=1)
    return max(top, len(ds.speaker_names or []), 1)


def model_meta(data: PreparedData) -> dict:
    ds = data.dataset
    return {
        "task": ds.task,
        "dims": ds.dims(),
        "num_classes": ds.num_classes,
        "label_names": ds.label_names,
        "modalities": list(data.modalities),
        "num_speakers": _num_speakers(ds),
    }


def build_model(cfg: Config, meta: dict, device: torch.device) -> tuple[BalmModel, Any]:
    """Backbone + variant, seeded with ``cfg.seed``; returns (model on ``device``, rebalancer or None)."""
    from balm.backbones import build_backbone
    from balm.core import build_variant

    torch.manual_seed(cfg.seed)
    task, dims = meta["task"], meta["dims"]
    out_dim = 1 if task == "regression" else int(meta["num_classes"])
    kw = dict(cfg.backbone_options)
    params = backbone_parameters(cfg.backbone)
    if "num_speakers" in params and "num_speakers" not in kw:
        kw["num_speakers"] = meta["num_speakers"]
    backbone = build_backbone(cfg.backbone, dims, out_dim, **kw).to(device)
    variant = build_variant(
        cfg.variant,
        dims=dims,
        encoders=backbone.encoders,
        embed_dims=backbone.embed_dims,
        fusion_head=backbone.fusion_head,
        task=task,
        num_classes=meta["num_classes"] if task == "classification" else None,
        d_global=cfg.d_global,
        rho=cfg.rho,
        tau=cfg.tau,
        noise=cfg.noise,
        missing_aware=cfg.missing_aware,
        coefficients=cfg.coefficients,
        delta_mode=cfg.delta_mode,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        start_epoch=cfg.modulation_start,
        end_epoch=cfg.modulation_end,
        **cfg.variant_options,
    )
    fcm = variant.fcm.to(device) if variant.fcm is not None else None
    rebalancer = variant.rebalancer.to(device) if variant.rebalancer is not None else None
    return BalmModel(backbone, fcm), rebalancer


# --------------------------------------------------------------------------- loss


def class_weight_tensor(cfg: Config, train: Split, num_classes: int | None) -> torch.Tensor | None:
    """none -> None; balanced -> N / (C n_c); inverse -> N / n_c (MM-DFN's 1/frequency); or the list."""
    if num_classes is None or cfg.class_weights == "none":
        return None
    if isinstance(cfg.class_weights, list):
        return torch.tensor(cfg.class_weights, dtype=torch.float32)
    counts = np.bincount(train.labels.astype(np.int64), minlength=num_classes).astype(np.float64)
    n = counts.sum()
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, n / counts, 0.0)
    if cfg.class_weights == "balanced":
        w = w / num_classes
    return torch.tensor(w, dtype=torch.float32)


def make_loss(cfg: Config, task: str, weight: torch.Tensor | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The task loss L_task (Eq. 14).

    nll / ce: cross-entropy of the logits (weighted mean with class weights);
    focal: ``mean_i(-w_{y_i} (1 - p_i)^γ log p_i)`` with ``p_i`` the (detached) probability of the
    true class, as MM-DFN computes it; mse: mean squared error of the scores.
    """
    kind = cfg.loss if cfg.loss != "auto" else ("mse" if task == "regression" else "nll")
    if kind == "mse":
        return lambda pred, y: F.mse_loss(pred, y.to(pred.dtype))
    if kind in ("nll", "ce"):
        def ce(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            w = None if weight is None else weight.to(pred.device)
            return F.cross_entropy(pred, y, weight=w)

        return ce
    gamma = cfg.focal_gamma

    def focal(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logpt = F.log_softmax(pred, dim=-1).gather(1, y[:, None]).squeeze(1)
        pt = logpt.detach().exp()
        if weight is not None:
            logpt = logpt * weight.to(pred.device)[y]
        return (-((1 - pt) ** gamma) * logpt).mean()

    return focal


# --------------------------------------------------------------------------- evaluation


def batches(num_sequences: int, batch_size: int, order: np.ndarray | None = None):
    idx = np.arange(num_sequences) if order is None else order
    for a in range(0, num_sequences, batch_size):
        yield idx[a : a + batch_size]


@torch.no_grad()
def predict(model: BalmModel, split: Split, batch_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(targets, predictions) over ``split`` in row order; logits (N, C) or scores (N,)."""
    model.eval()
    preds, targets = [], []
    for idx in batches(split.num_sequences, batch_size):
        batch = collate(split, idx).to(device)
        preds.append(model(batch).prediction.float().cpu())
        targets.append(batch.targets.cpu())
    if not preds:
        return split.labels.copy(), np.zeros((0,))
    return torch.cat(targets).numpy(), torch.cat(preds).numpy()


def evaluate_split(model: BalmModel, split: Split, meta: dict, batch_size: int, device: torch.device) -> dict:
    """Metrics of ``split`` (see :func:`balm.experiments.metrics.evaluate_predictions`)."""
    y, pred = predict(model, split, batch_size, device)
    return MX.evaluate_predictions(meta["task"], y, pred, meta["num_classes"], meta["label_names"])


@torch.no_grad()
def tsne_sample(model: BalmModel, split: Split, n: int, seed: int, batch_size: int, device: torch.device) -> dict:
    """Calibrated inputs x̂^m, encoder outputs z^m, fused h and labels of ``n`` random utterances."""
    from balm.masking import derive_seed

    model.eval()
    parts: dict[str, list] = {}
    for idx in batches(split.num_sequences, batch_size):
        batch = collate(split, idx).to(device)
        cal = model.calibrate(batch)
        out = model.backbone(cal)
        rows = {f"input_{m}": x[batch.valid] for m, x in cal.features.items()}
        rows.update({f"embed_{m}": z for m, z in out.embeddings.items()})
        rows["fused"] = out.fused
        rows["labels"] = batch.targets
        rows.update({f"mask_{m}": k for m, k in batch.flat_masks().items()})
        for k, v in rows.items():
            parts.setdefault(k, []).append(v.detach().cpu())
    total = split.num_utterances
    rng = np.random.default_rng(derive_seed(seed, "tsne"))
    pick = np.sort(rng.choice(total, size=min(n, total), replace=False))
    out = {k: torch.cat(v).numpy()[pick] for k, v in parts.items()}
    for k in out:
        if k.startswith("input_"):  # the widest arrays; float16 is plenty for a t-SNE
            out[k] = out[k].astype(np.float16)
    out["index"] = pick
    return out


# --------------------------------------------------------------------------- checkpoint


def save_checkpoint(path: Path, cfg: Config, meta: dict, model: BalmModel, rebalancer, best_state: dict) -> None:
    """State dicts and the config as plain types (loadable with ``torch.load(weights_only=True)``)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": cfg.to_dict(),
        "meta": meta,
        "model": {k: v.detach().cpu() for k, v in best_state.items()},
        "rebalancer": None if rebalancer is None else {k: v.detach().cpu() for k, v in rebalancer.state_dict().items()},
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> BalmModel:
    """Rebuild the model of a ``checkpoint.pt`` with its best weights, in eval mode.

    The returned model has ``.config`` (a :class:`Config`) and ``.meta`` (task, dims, classes,
    modalities); evaluate it on data prepared with ``prepare_data(model.config)``.
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a balm checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    cfg = Config.from_dict(payload["config"], source=str(path))
    device = torch.device(device)
    model, _ = build_model(cfg, payload["meta"], device)
    model.load_state_dict(payload["model"])
    model.eval()
    model.config = cfg
    model.meta = payload["meta"]
    return model


# --------------------------------------------------------------------------- logging


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


class _Tensorboard:
    """TensorBoard scalars through ``torch.utils.tensorboard`` (needs the ``tensorboard`` package)."""

    def __init__(self, directory: Path | None):
        self.writer = None
        if directory is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the package is optional; result.json's files.tensorboard is then null
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


def _grad_norms(encoders: nn.ModuleDict) -> dict[str, float]:
    """L2 norm of each encoder's whole gradient (before any modulation)."""
    out = {}
    for m, enc in encoders.items():
        grads = [p.grad for p in enc.parameters() if p.grad is not None]
        out[m] = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))) if grads else 0.0
    return out


def _progress(total: int, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="epochs", unit="ep", disable=quiet or not sys.stderr.isatty(), leave=False)


def _savez(path: str, arrays: dict) -> None:
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


# --------------------------------------------------------------------------- training


OUTPUT_FILES = ("result.json", "checkpoint.pt", "stats.jsonl", "tsne.npz", "tb")


def train(
    cfg: Config,
    out_dir: str | Path,
    *,
    dataset: Dataset | None = None,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train ``cfg``, write the run's files into ``out_dir`` and return the result dict.

    ``dataset`` replaces loading ``cfg.data`` (the spec is still recorded). Everything that can
    fail on bad input (dataset checks, model construction) happens before ``out_dir`` is touched.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    data = prepare_data(cfg, dataset)
    ds = data.dataset
    meta = model_meta(data)
    model, rebalancer = build_model(cfg, meta, device)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:  # a rerun in the same folder starts clean
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()

    train_split, dev_split, test_split = ds["train"], ds["dev"], ds["test"]
    loss_fn = make_loss(cfg, ds.task, class_weight_tensor(cfg, train_split, ds.num_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    eval_bs = cfg.effective_eval_batch_size
    tb = _Tensorboard(out / "tb" if cfg.tensorboard else None)
    say = log or (lambda s: None)

    best = {"wf1": -math.inf, "epoch": -1, "state": None, "dev": None}
    history, epoch_seconds = [], []
    step, since_best, stopped_early = 0, 0, False
    bar = _progress(cfg.epochs, quiet)
    with open(out / "stats.jsonl", "w", encoding="utf-8") as stats_file:
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            model.train()
            if rebalancer is not None:
                rebalancer.set_epoch(epoch)
            order = rng.permutation(train_split.num_sequences)
            losses, norm_sums, n_steps = [], {m: 0.0 for m in data.modalities}, 0
            for idx in batches(train_split.num_sequences, cfg.batch_size, order):
                batch = collate(train_split, idx).to(device)
                targets = batch.targets
                output = model(batch)
                task_loss = loss_fn(output.prediction, targets)
                loss = task_loss if rebalancer is None else task_loss + rebalancer.alignment_loss()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norms = _grad_norms(model.backbone.encoders)
                if rebalancer is not None:
                    rebalancer.rebalance_(output.embeddings, output.prediction.detach(), targets, batch.flat_masks())
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=cfg.grad_clip, norm_type=2.0)
                optimizer.step()

                record = {"kind": "step", "step": step, "epoch": epoch, "loss": loss.item(), "task_loss": task_loss.item(),
                          "encoder_grad_norm": norms}
                if rebalancer is not None:
                    record.update(rebalancer.stats)
                stats_file.write(dumps_line(record) + "\n")
                tb.scalars("train", {k: v for k, v in record.items() if k not in ("kind", "step", "epoch")}, step)
                losses.append(record["loss"])
                for m, v in norms.items():
                    norm_sums[m] += v
                n_steps += 1
                step += 1

            dev = evaluate_split(model, dev_split, meta, eval_bs, device)
            seconds = time.perf_counter() - t0
            epoch_seconds.append(seconds)
            train_loss = float(np.mean(losses)) if losses else float("nan")
            mean_norms = {m: v / max(n_steps, 1) for m, v in norm_sums.items()}
            history.append({"epoch": epoch, "train_loss": train_loss, "dev_acc": dev["acc"], "dev_wf1": dev["wf1"]})
            stats_file.write(dumps_line({"kind": "epoch", "epoch": epoch, "train_loss": train_loss, "dev_acc": dev["acc"],
                                         "dev_wf1": dev["wf1"], "encoder_grad_norm": mean_norms, "seconds": seconds}) + "\n")
            stats_file.flush()
            tb.scalars("epoch", {"train_loss": train_loss, "dev_acc": dev["acc"], "dev_wf1": dev["wf1"],
                                 "encoder_grad_norm": mean_norms}, epoch)

            if dev["wf1"] > best["wf1"]:
                best = {"wf1": dev["wf1"], "epoch": epoch, "dev": dev,
                        "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
                since_best = 0
            else:
                since_best += 1
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}", dev_wf1=f"{dev['wf1']:.4f}")
            msg = (f"epoch {epoch + 1}/{cfg.epochs}  loss {train_loss:.4f}  dev acc {dev['acc']:.4f}  "
                   f"dev w-f1 {dev['wf1']:.4f}  {seconds:.1f}s")
            if bar.disable:
                say(msg)
            else:
                bar.write(msg)
            if cfg.early_stopping and since_best >= cfg.early_stopping:
                stopped_early = True
                break
    bar.close()

    model.load_state_dict(best["state"])
    test = evaluate_split(model, test_split, meta, eval_bs, device)
    tb.scalars("best", {"test_acc": test["acc"], "test_wf1": test["wf1"]}, best["epoch"])
    tb.close()
    if cfg.checkpoint:
        save_checkpoint(out / "checkpoint.pt", cfg, meta, model, rebalancer, best["state"])
    if cfg.tsne_samples:
        sample = tsne_sample(model, test_split, cfg.tsne_samples, cfg.seed, eval_bs, device)
        sample["modalities"] = np.array(data.modalities)
        atomic_write(out / "tsne.npz", lambda tmp: _savez(tmp, sample))

    dev_best = {k: v for k, v in best["dev"].items() if k != "report"}
    result = {
        "schema": RESULT_SCHEMA,
        "status": "finished",
        "task": ds.task,
        "test": test,
        "dev": dev_best,
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "epoch_seconds": epoch_seconds,
        "train_seconds": float(sum(epoch_seconds)),
        "history": history,
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
        "files": {
            "checkpoint": "checkpoint.pt" if cfg.checkpoint else None,
            "stats": "stats.jsonl",
            "tsne": "tsne.npz" if cfg.tsne_samples else None,
            "tensorboard": "tb" if tb.writer is not None else None,
        },
    }
    atomic_write_json(out / "result.json", result)
    return result
