"""Running a trained model over a split: batches, predictions, metrics and the t-SNE sample."""

from __future__ import annotations

import numpy as np
import torch

from balm.data.batch import collate
from balm.data.dataset import Split

from . import metrics as MX
from .model import BalmModel


def batches(num_sequences: int, batch_size: int, order: np.ndarray | None = None):
    """Index arrays of ``batch_size`` sequences, in ``order`` (default: row order)."""
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
