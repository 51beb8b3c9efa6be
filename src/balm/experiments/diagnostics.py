"""Diagnostics of a trained model: per-utterance test predictions, masked evaluations with
modalities made absent, exact Shapley values of the modalities, and the dev accuracy of a
rebalancer's unimodal heads.

A modality made *absent* is treated as the missing-mask operator treats a missing entry: its
mask is False and its features are zero at every utterance of the split.

Shapley value of modality m under the value function v (here: test W-F1 of the model with
the modalities outside S absent), over the M modalities N::

    φ_m = Σ_{S ⊆ N∖{m}}  |S|! (M − |S| − 1)! / M!  · (v(S ∪ {m}) − v(S))

The values are efficient: Σ_m φ_m = v(N) − v(∅).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from balm.data.batch import Batch, collate
from balm.data.dataset import Split

from . import metrics as MX
from .evaluation import batches, evaluate_split
from .model import BalmModel

# 2^M masked evaluations: beyond this many modalities the exact values are not computed
MAX_SHAPLEY_MODALITIES = 10


def absent(batch: Batch, modalities: Iterable[str]) -> Batch:
    """``batch`` with every modality in ``modalities`` missing everywhere (mask False, features 0)."""
    gone = set(modalities)
    if not gone:
        return batch
    return dataclasses.replace(
        batch,
        features={m: (torch.zeros_like(x) if m in gone else x) for m, x in batch.features.items()},
        masks={m: (torch.zeros_like(k) if m in gone else k) for m, k in batch.masks.items()},
    )


@torch.no_grad()
def predict_masked(model: BalmModel, split: Split, batch_size: int, device: torch.device,
                   missing: Iterable[str] = ()) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(targets, predictions, per-modality availability) over ``split`` in row order, with the
    modalities in ``missing`` absent. The availability is that of the split (before ``missing``)."""
    model.eval()
    missing = tuple(missing)
    preds, targets, masks = [], [], {}
    for idx in batches(split.num_sequences, batch_size):
        batch = collate(split, idx)
        for m, k in batch.flat_masks().items():
            masks.setdefault(m, []).append(k.numpy())
        batch = absent(batch, missing).to(device)
        preds.append(model(batch).prediction.float().cpu())
        targets.append(batch.targets.cpu())
    if not preds:
        return split.labels.copy(), np.zeros((0,)), {m: np.zeros(0, bool) for m in split.features}
    return (torch.cat(targets).numpy(), torch.cat(preds).numpy(),
            {m: np.concatenate(v).astype(bool) for m, v in masks.items()})


def prediction_arrays(model: BalmModel, split: Split, batch_size: int, device: torch.device) -> dict[str, np.ndarray]:
    """The arrays of ``predictions.npz``: ``targets`` (N,), ``predictions`` (N, C) logits or (N,)
    scores, ``mask_<m>`` (N,) bool per modality (True where m is present) and ``modalities``."""
    y, pred, masks = predict_masked(model, split, batch_size, device)
    out = {"targets": y, "predictions": pred.astype(np.float32)}
    out.update({f"mask_{m}": k for m, k in masks.items()})
    out["modalities"] = np.array(list(masks))
    return out


def subsets(players: Sequence[str]) -> list[tuple[str, ...]]:
    """Every subset of ``players`` (in their order), by size, then lexicographically by position."""
    return [c for k in range(len(players) + 1) for c in itertools.combinations(players, k)]


def subset_key(s: Iterable[str]) -> str:
    """The name of a subset in result.json: modality names joined by ``+``; ``"∅"`` for none."""
    s = list(s)
    return "+".join(s) if s else "∅"


def shapley_values(players: Sequence[str], value: Mapping[frozenset, float]) -> dict[str, float]:
    """Exact Shapley value of each player for the value function ``value`` (frozenset -> float,
    defined on every subset of ``players``): the equation in the module docstring."""
    players = list(players)
    n = len(players)
    missing = [s for s in subsets(players) if frozenset(s) not in value]
    if missing:
        raise ValueError(f"value function undefined on subset(s) {[subset_key(s) for s in missing[:3]]}")
    out = {}
    for p in players:
        others = [q for q in players if q != p]
        total = 0.0
        for s in subsets(others):
            w = math.factorial(len(s)) * math.factorial(n - len(s) - 1) / math.factorial(n)
            total += w * (value[frozenset(s) | {p}] - value[frozenset(s)])
        out[p] = total
    return out


def masked_values(model: BalmModel, split: Split, meta: dict, batch_size: int, device: torch.device,
                  metric: str = "wf1") -> dict[frozenset, float]:
    """v(S) for every subset S of the model's modalities: ``metric`` of ``split`` with the
    modalities outside S absent (2^M evaluations)."""
    mods = list(split.features)
    out = {}
    for s in subsets(mods):
        y, pred, _ = predict_masked(model, split, batch_size, device, [m for m in mods if m not in s])
        out[frozenset(s)] = float(MX.evaluate_predictions(meta["task"], y, pred, meta["num_classes"])[metric])
    return out


def shapley_report(model: BalmModel, split: Split, meta: dict, batch_size: int, device: torch.device) -> dict | None:
    """``result.json``'s ``shapley``: ``{"metric": "wf1", "values": {m: φ_m}, "subsets": {S: v(S)}}``
    on ``split``; None with more than :data:`MAX_SHAPLEY_MODALITIES` modalities."""
    mods = list(split.features)
    if len(mods) > MAX_SHAPLEY_MODALITIES:
        return None
    v = masked_values(model, split, meta, batch_size, device)
    phi = shapley_values(mods, v)
    return {"metric": "wf1", "values": phi,
            "subsets": {subset_key(s): v[frozenset(s)] for s in subsets(mods)}}


def _heads(rebalancer) -> nn.ModuleDict | None:
    heads = getattr(rebalancer, "heads", None) if rebalancer is not None else None
    return None if heads is None or len(heads) == 0 else heads


def _head_scores(task: str, num_classes: int | None, outs: dict[str, list], ys: dict[str, list]) -> dict[str, float]:
    res = {}
    for m in outs:
        y, p = torch.cat(ys[m]).numpy(), torch.cat(outs[m]).numpy()
        if y.size == 0:
            res[m] = float("nan")
            continue
        if task == "regression":
            p = p.reshape(-1)
        res[m] = float(MX.evaluate_predictions(task, y, p, num_classes)["acc"])
    return res


def _add_head_outputs(heads: nn.ModuleDict, emb: Mapping[str, torch.Tensor], batch: Batch,
                      outs: dict[str, list], ys: dict[str, list]) -> None:
    masks, y = batch.flat_masks(), batch.targets
    for m, head in heads.items():
        w = next(head.parameters())
        keep = masks[m]
        outs[m].append(head(emb[m][keep].to(w.dtype)).float().cpu())
        ys[m].append(y[keep].cpu())


@torch.no_grad()
def head_accuracy(model: BalmModel, rebalancer, split: Split, meta: dict, batch_size: int,
                  device: torch.device) -> dict[str, float] | None:
    """Accuracy of each unimodal head of ``rebalancer`` on ``split``, over the utterances where
    its modality is present (the head reads the encoder output z^m); None when the rebalancer
    has no heads (``none``, ``fcm-only``, OGM-GE with split scores, ...). For regression the
    accuracy is that of the sign, as :func:`balm.experiments.metrics.evaluate_predictions` scores it."""
    heads = _heads(rebalancer)
    if heads is None:
        return None
    was_training = rebalancer.training
    model.eval()
    rebalancer.eval()
    outs: dict[str, list] = {m: [] for m in heads}
    ys: dict[str, list] = {m: [] for m in heads}
    for idx in batches(split.num_sequences, batch_size):
        batch = collate(split, idx).to(device)
        _add_head_outputs(heads, model.backbone(model.calibrate(batch)).embeddings, batch, outs, ys)
    rebalancer.train(was_training)
    return _head_scores(meta["task"], meta["num_classes"], outs, ys)


@torch.no_grad()
def evaluate_with_heads(model: BalmModel, rebalancer, split: Split, meta: dict, batch_size: int,
                        device: torch.device) -> tuple[dict, dict[str, float] | None]:
    """``(evaluate_split(...), head_accuracy(...))`` of ``split`` from one forward pass per batch:
    the heads read the z^m of the same (eval-mode, hence deterministic) forward that gives the
    prediction, so the values equal those of the two functions called one after the other."""
    heads = _heads(rebalancer)
    if heads is None or split.num_sequences == 0:
        return evaluate_split(model, split, meta, batch_size, device), head_accuracy(
            model, rebalancer, split, meta, batch_size, device)
    was_training = rebalancer.training
    model.eval()
    rebalancer.eval()
    preds, targets = [], []
    outs: dict[str, list] = {m: [] for m in heads}
    ys: dict[str, list] = {m: [] for m in heads}
    for idx in batches(split.num_sequences, batch_size):
        batch = collate(split, idx).to(device)
        out = model(batch)
        preds.append(out.prediction.float().cpu())
        targets.append(batch.targets.cpu())
        _add_head_outputs(heads, out.embeddings, batch, outs, ys)
    rebalancer.train(was_training)
    y, pred = torch.cat(targets).numpy(), torch.cat(preds).numpy()
    metrics = MX.evaluate_predictions(meta["task"], y, pred, meta["num_classes"], meta["label_names"])
    return metrics, _head_scores(meta["task"], meta["num_classes"], outs, ys)


def pattern_of(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per utterance, the names of the present modalities joined by ``+`` (``"∅"`` for none)."""
    mods = list(masks)
    if not mods:
        return np.zeros(0, dtype=object)
    k = np.stack([np.asarray(masks[m], bool) for m in mods], 1)
    return np.array([subset_key([m for m, on in zip(mods, row) if on]) for row in k], dtype=object)


def pattern_scores(task: str, targets: np.ndarray, predictions: np.ndarray, patterns: np.ndarray,
                   num_classes: int | None) -> dict[str, dict]:
    """Per missing pattern: ``{"n", "acc", "wf1"}`` of the given predictions on its utterances."""
    out = {}
    for p in dict.fromkeys(patterns.tolist()):
        sel = patterns == p
        r = MX.evaluate_predictions(task, targets[sel], predictions[sel], num_classes)
        out[p] = {"n": int(sel.sum()), "acc": float(r["acc"]), "wf1": float(r["wf1"])}
    return out

