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
and TensorBoard events in ``tb/``. The pieces live beside this loop: :mod:`.prepare` (data),
:mod:`.model` (model, checkpoint), :mod:`.losses`, :mod:`.evaluation`, :mod:`.runlog` (files).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from balm.data.batch import collate
from balm.data.dataset import Dataset

from .config import Config
from .evaluation import batches, evaluate_split, tsne_sample
from balm.io import atomic_write_json
from .losses import class_weight_tensor, make_loss
from .model import build_model, model_meta, resolve_device, save_checkpoint
from .optim import make_optimizer
from .prepare import prepare_data
from .runlog import RunLog, encoder_grad_norms, fresh_output_dir, run_result, write_tsne


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
    out = fresh_output_dir(out_dir)

    train_split, dev_split, test_split = ds["train"], ds["dev"], ds["test"]
    loss_fn = make_loss(cfg, ds.task, class_weight_tensor(cfg, train_split, ds.num_classes))
    optimizer = make_optimizer(cfg, model.parameters())
    rng = np.random.default_rng(cfg.seed)
    eval_bs = cfg.effective_eval_batch_size

    best = {"wf1": -math.inf, "epoch": -1, "state": None, "dev": None}
    since_best, stopped_early = 0, False
    with RunLog(out, cfg, data.modalities, quiet=quiet, log=log) as runlog:
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            model.train()
            if rebalancer is not None:
                rebalancer.set_epoch(epoch)
            order = rng.permutation(train_split.num_sequences)
            for idx in batches(train_split.num_sequences, cfg.batch_size, order):
                batch = collate(train_split, idx).to(device)
                output = model(batch)
                task_loss = loss_fn(output.prediction, batch.targets)
                loss = task_loss if rebalancer is None else task_loss + rebalancer.alignment_loss()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norms = encoder_grad_norms(model.backbone.encoders)
                if rebalancer is not None:
                    rebalancer.rebalance_(output.embeddings, output.prediction.detach(), batch.targets, batch.flat_masks())
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=cfg.grad_clip, norm_type=2.0)
                if rebalancer is None:
                    optimizer.step()
                else:
                    rebalancer.step(optimizer)  # optimizer.step(), then any update modulation
                runlog.step(epoch, loss, task_loss, norms, rebalancer)

            dev = evaluate_split(model, dev_split, meta, eval_bs, device)
            runlog.epoch(epoch, dev, time.perf_counter() - t0)
            if dev["wf1"] > best["wf1"]:
                best = {"wf1": dev["wf1"], "epoch": epoch, "dev": dev,
                        "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
                since_best = 0
            else:
                since_best += 1
            if cfg.early_stopping and since_best >= cfg.early_stopping:
                stopped_early = True
                break

    model.load_state_dict(best["state"])
    test = evaluate_split(model, test_split, meta, eval_bs, device)
    runlog.best(test, best["epoch"])
    if cfg.checkpoint:
        save_checkpoint(out / "checkpoint.pt", cfg, meta, model, rebalancer, best["state"])
    if cfg.tsne_samples:
        sample = tsne_sample(model, test_split, cfg.tsne_samples, cfg.seed, eval_bs, device)
        sample["modalities"] = np.array(data.modalities)
        write_tsne(out / "tsne.npz", sample)
    result = run_result(cfg, data, runlog, test=test, best=best, stopped_early=stopped_early, device=device,
                        model=model, rebalancer=rebalancer)
    atomic_write_json(out / "result.json", result)
    return result
