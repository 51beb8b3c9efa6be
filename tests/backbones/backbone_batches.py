"""Random padded batches for backbone tests (imported by the tests in this folder)."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from balm.methods import build_method

from balm.data.batch import Batch, collate
from balm.data.dataset import Split

ROOT = Path(__file__).resolve().parents[2]


def load_bench(name: str):
    """The module ``benchmarks/<name>.py`` (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def random_split(
    dims: dict[str, int],
    lengths: list[int],
    seed: int = 0,
    missing: float = 0.4,
    task: str = "classification",
    num_classes: int = 4,
    num_speakers: int = 2,
) -> Split:
    """A split of ``len(lengths)`` dialogues with random features and a random mask (>= 1 present)."""
    rng = np.random.default_rng(seed)
    n = int(sum(lengths))
    mask = rng.random((n, len(dims))) >= missing
    mask[np.arange(n), rng.integers(0, len(dims), n)] = True
    labels = (
        rng.integers(0, num_classes, n).astype(np.int64)
        if task == "classification"
        else rng.normal(size=n).astype(np.float32)
    )
    return Split(
        name="train",
        features={m: rng.normal(size=(n, d)).astype(np.float32) for m, d in dims.items()},
        labels=labels,
        speakers=rng.integers(0, num_speakers, n).astype(np.int64),
        lengths=np.asarray(lengths, dtype=np.int64),
        sequence_ids=[f"d{i}" for i in range(len(lengths))],
        mask=mask,
    )


def learnable_split(dims: dict[str, int], task: str, seed: int = 0) -> Split:
    """Features carry the label: x^m = noise + 2·P^m[y] (classification) or + y·u^m (regression)."""
    split = random_split(dims, [5, 3, 7, 4, 6, 2, 5, 4], seed=seed, missing=0.3, task=task, num_classes=3)
    rng = np.random.default_rng(seed + 1)
    for x in split.features.values():
        if task == "classification":
            x += 2.0 * rng.normal(size=(3, x.shape[1])).astype(np.float32)[split.labels]
        else:
            x += split.labels[:, None] * rng.normal(size=(1, x.shape[1])).astype(np.float32)
    return split


def random_batch(dims: dict[str, int], lengths: list[int], seed: int = 0, **kw) -> Batch:
    split = random_split(dims, lengths, seed, **kw)
    return collate(split, range(len(lengths)))


def train_steps(model, variant_name, task, batches, steps, lr):
    """Train ``model`` with BALM variant ``variant_name`` for ``steps`` steps; the task losses."""
    classes = model.fusion_head.out_features
    v = build_method(
        variant_name, dims={m: x.shape[-1] for m, x in batches[0].features.items()},
        encoders=model.encoders, embed_dims=model.embed_dims, fusion_head=model.fusion_head,
        task=task, num_classes=classes if task == "classification" else None, shared={"lr": lr},
    )
    params = list(model.parameters()) + (list(v.input_module.parameters()) if v.input_module is not None else [])
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for step in range(steps):
        batch = batches[step % len(batches)]
        feats = v.input_module(batch.features, batch.masks, batch.valid) if v.input_module is not None else batch.features
        out = model(replace(batch, features=feats))
        if task == "classification":
            loss = F.cross_entropy(out.prediction, batch.targets)
        else:
            loss = F.mse_loss(out.prediction, batch.targets)
        total = loss + (v.rebalancer.alignment_loss() if v.rebalancer is not None else 0.0)
        opt.zero_grad()
        total.backward()
        if v.rebalancer is not None:
            v.rebalancer.rebalance_(out.embeddings, out.prediction.detach(), batch.targets, batch.flat_masks())
        torch.nn.utils.clip_grad_norm_(params, 2.0)
        opt.step()
        losses.append(loss.item())
    return losses
