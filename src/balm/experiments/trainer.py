"""Train one configuration: data, model, the BALM training step, model selection, outputs.

The loop follows Algorithm 1 (docs/method.md §4) step by step::

    x̂ = FCM(x̃)                          (variants with FCM)
    out = backbone(x̂)                    prediction, z^m, h
    L = L_task(out.prediction, y) [+ out.aux_loss] + τ L_mod   (backbone's own loss; rebalancer.alignment_loss())
    L.backward()
    rebalancer.rebalance_(z, ŷ.detach(), y, e)     heads step, Δ, μ, scale φ^m's gradients
    clip_grad_norm_(max_norm=grad_clip)
    optimizer.step()

The epoch with the best validation weighted-F1 is kept (the test split is never looked at during
training) and evaluated on test. Outputs of ``train(config, out_dir)`` (docs/experiments.md):
``result.json`` (written last, atomically), ``checkpoint.pt``, ``stats.jsonl``, ``tsne.npz``,
``predictions.npz`` (per-utterance test predictions) and TensorBoard events in ``tb/``; after
model selection the best model's exact Shapley values of the modalities (:mod:`.diagnostics`) go
into result.json. The run is built in a hidden sibling folder and swapped in for ``out_dir`` when
it ends; a last-epoch checkpoint makes it resumable (:mod:`.runfolder`), written after the first
epoch and then at the end of an epoch whenever at least :data:`CHECKPOINT_RATIO` times its own cost
has passed since the last one (at most one write per epoch, at most ~2.5 % overhead; a resumed run
restarts after the last written epoch). Epochs are numbered from 0 everywhere (files, console,
``start_epoch``).

A step whose loss or encoder gradient norm is not finite ends the run with ``status:
"diverged"`` (the epoch and step in ``diverged``; no test metrics): the check reads the values
the run log already brings to the host, so it costs no extra synchronisation.

The pieces live beside this loop: :mod:`.prepare` (data), :mod:`.model` (model, checkpoint),
:mod:`.losses`, :mod:`.evaluation`, :mod:`.runlog` (files), :mod:`.runfolder` (folder, resume),
:mod:`.diagnostics` (head accuracy, Shapley values).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from balm.backbones.base import backbone_stages
from balm.data.batch import collate
from balm.data.dataset import Dataset

from . import diagnostics as DG
from .config import Config, ConfigError
from .evaluation import batches, evaluate_split, tsne_sample
from balm.io import atomic_write_json
from .losses import class_weight_tensor, make_loss
from .memory import release_memory
from .model import build_model, model_meta, resolve_device, save_checkpoint
from .optim import make_optimizer
from .prepare import prepare_data
from .runfolder import check_target, finish, open_work_dir, write_last
from .runlog import RunLog, encoder_grad_norms, run_result, write_predictions, write_tsne


CHECKPOINT_RATIO = 40.0  # the resume checkpoint takes at most about 1/40 of the training time


def _rng_state(rng: np.random.Generator, device: torch.device) -> dict:
    state = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(rng: np.random.Generator, device: torch.device, state: dict) -> None:
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _set_stage(backbone: torch.nn.Module, name: str) -> None:
    fn = getattr(backbone, "set_stage", None)
    if fn is not None:
        fn(name)


def _stage_record(stage, best: dict, epochs: int, seconds: float) -> dict:
    """One entry of ``result.json``'s ``stages``: what ran and what dev selected in the stage."""
    dev = None if best["dev"] is None else {k: v for k, v in best["dev"].items() if k != "report"}
    return {"name": stage.name, "epochs": epochs, "best_epoch": best["epoch"], "dev": dev, "seconds": seconds}


def _nonfinite(record: dict) -> str | None:
    """What is not finite in a step record (loss, then encoder gradient norms), or None."""
    if not math.isfinite(record["loss"]):
        return f"loss {record['loss']}"
    bad = [f"{m} {v}" for m, v in record["encoder_grad_norm"].items() if not math.isfinite(v)]
    return f"encoder gradient norm ({', '.join(bad)})" if bad else None


def train(
    cfg: Config,
    out_dir: str | Path,
    *,
    dataset: Dataset | None = None,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    after_epoch: Callable[[int], None] | None = None,
) -> dict:
    """Train ``cfg``, write the run's files into ``out_dir`` and return the result dict.

    ``dataset`` replaces loading ``cfg.data`` (the spec is still recorded). Everything that can
    fail on bad input (dataset checks, model construction) happens before anything is written;
    ``out_dir`` itself is replaced only when the run has a result. ``resume`` continues an
    interrupted run of the same config from its last completed epoch; ``overwrite`` allows
    replacing a non-empty ``out_dir`` that balm did not write. ``after_epoch(epoch)`` is called
    at the end of each epoch (after its resume checkpoint, when one was written).
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    release_memory()  # what an earlier run in this process (a sweep worker's) left behind
    device = resolve_device(cfg.device)
    data = prepare_data(cfg, dataset)
    ds = data.dataset
    meta = model_meta(data)
    model, rebalancer = build_model(cfg, meta, device)
    target = check_target(Path(out_dir), overwrite=overwrite)

    train_split, dev_split, test_split = ds["train"], ds["dev"], ds["test"]
    loss_fn = make_loss(cfg, ds.task, class_weight_tensor(cfg, train_split, ds.num_classes))
    plan = backbone_stages(model.backbone)
    staged = len(plan) > 1
    lengths = [cfg.epochs if st.epochs is None else st.epochs for st in plan]
    rng = np.random.default_rng(cfg.seed)
    eval_bs = cfg.effective_eval_batch_size

    best = {"wf1": -math.inf, "epoch": -1, "state": None, "dev": None}
    since_best, stopped_early, diverged, start = 0, False, None, 0
    stage_index, stage_start, records = 0, 0, []
    out, last = open_work_dir(target, resume=resume)
    if last is not None and last["config"] != cfg.to_dict():
        raise ConfigError("the interrupted run in this folder has another config; run without --resume to start "
                          "afresh", source=str(out))
    if last is not None:
        stage_index, stage_start, records = last.get("stage", 0), last.get("stage_start", 0), last.get("stages", [])
    ckpt = {"at": -math.inf, "cost": 0.0}
    with RunLog(out, cfg, data.modalities, quiet=quiet, log=log, resume=None if last is None else last["log"],
                total_epochs=sum(lengths)) as runlog:
        for si in range(stage_index, len(plan)):
            stage = plan[si]
            _set_stage(model.backbone, stage.name)
            params = [p for p in model.parameters() if p.requires_grad] if staged else model.parameters()
            optimizer = make_optimizer(cfg, params, lr=stage.lr)
            if last is not None and si == stage_index:
                model.load_state_dict(last["model"])
                optimizer.load_state_dict(last["optimizer"])
                if rebalancer is not None:
                    rebalancer.load_state_dict(last["rebalancer"])
                _set_rng_state(rng, device, last["rng"])
                best, since_best, stopped_early = last["best"], last["since_best"], last["stopped_early"]
                start = last["epoch"] + 1
            else:
                stage_start = start
            t_stage = time.perf_counter()
            for epoch in range(start, stage_start + lengths[si]):
                if stopped_early:
                    break
                t0 = time.perf_counter()
                model.train()
                if rebalancer is not None:
                    rebalancer.set_epoch(epoch)
                order = rng.permutation(train_split.num_sequences)
                for idx in batches(train_split.num_sequences, cfg.batch_size, order):
                    batch = collate(train_split, idx).to(device)
                    output = model(batch)
                    task_loss = loss_fn(output.prediction, batch.targets)
                    loss = task_loss if output.aux_loss is None else task_loss + output.aux_loss
                    loss = loss if rebalancer is None else loss + rebalancer.alignment_loss()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    norms = encoder_grad_norms(model.backbone.encoders)
                    if rebalancer is not None:
                        rebalancer.rebalance_(output.embeddings, output.prediction.detach(), batch.targets, batch.flat_masks())
                    if cfg.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(params if staged else model.parameters(), max_norm=cfg.grad_clip,
                                                       norm_type=2.0)
                    if rebalancer is None:
                        optimizer.step()
                    else:
                        rebalancer.step(optimizer)  # optimizer.step(), then any update modulation
                    bad = _nonfinite(runlog.step(epoch, loss, task_loss, norms, rebalancer))
                    if bad is not None:
                        diverged = {"epoch": epoch, "step": runlog.steps - 1, "what": bad}
                        if staged:
                            diverged["stage"] = stage.name
                        break
                if diverged is not None:
                    break

                dev, heads = DG.evaluate_with_heads(model, rebalancer, dev_split, meta, eval_bs, device)  # one pass
                seconds = time.perf_counter() - t0
                runlog.epoch(epoch, dev, seconds, heads=heads, stage=stage.name if staged else None)
                if dev["wf1"] > best["wf1"]:
                    best = {"wf1": dev["wf1"], "epoch": epoch, "dev": dev,
                            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
                    since_best = 0
                else:
                    since_best += 1
                if cfg.early_stopping and since_best >= cfg.early_stopping:
                    stopped_early = True
                # the resume checkpoint: after the first epoch, then whenever the time since the last
                # write is at least CHECKPOINT_RATIO times what that write took (overhead <= 1/RATIO)
                if time.perf_counter() - ckpt["at"] >= CHECKPOINT_RATIO * ckpt["cost"]:
                    t1 = time.perf_counter()
                    write_last(out, {"config": cfg.to_dict(), "epoch": epoch, "model": model.state_dict(),
                                     "optimizer": optimizer.state_dict(),
                                     "rebalancer": None if rebalancer is None else rebalancer.state_dict(),
                                     "rng": _rng_state(rng, device), "best": best, "since_best": since_best,
                                     "stopped_early": stopped_early, "log": runlog.state_dict(),
                                     "stage": si, "stage_start": stage_start, "stages": records})
                    ckpt = {"at": time.perf_counter(), "cost": time.perf_counter() - t1}
                if after_epoch is not None:
                    after_epoch(epoch)
                start = epoch + 1
            if diverged is not None or si == len(plan) - 1:
                break
            # the end of a stage: its best-on-dev state starts the next stage
            records.append(_stage_record(stage, best, start - stage_start, time.perf_counter() - t_stage))
            model.load_state_dict(best["state"])
            best = {"wf1": -math.inf, "epoch": -1, "state": None, "dev": None}
            since_best, stopped_early, last = 0, False, None
        if staged and diverged is None:
            records.append(_stage_record(plan[-1], best, start - stage_start, time.perf_counter() - t_stage))

    # training is over: its optimizer state, gradients and freed blocks are not needed below
    del optimizer
    last = None
    model.zero_grad(set_to_none=True)
    release_memory()
    if diverged is not None:
        runlog.tb.close()
        result = run_result(cfg, data, runlog, test=None, best=best, stopped_early=False, device=device,
                            model=model, rebalancer=rebalancer)
        result.update(status="diverged", diverged=diverged)
        if staged:
            result["stages"] = records
        result["files"].update(checkpoint=None, tsne=None)
        atomic_write_json(out / "result.json", result)
        finish(out, target)
        return result
    model.load_state_dict(best["state"])
    test = evaluate_split(model, test_split, meta, eval_bs, device)
    runlog.best(test, best["epoch"])
    if cfg.checkpoint:
        save_checkpoint(out / "checkpoint.pt", cfg, meta, model, rebalancer, best["state"])
    if cfg.tsne_samples:
        sample = tsne_sample(model, test_split, cfg.tsne_samples, cfg.seed, eval_bs, device)
        sample["modalities"] = np.array(data.modalities)
        write_tsne(out / "tsne.npz", sample)
    write_predictions(out / "predictions.npz", DG.prediction_arrays(model, test_split, eval_bs, device))
    shapley = DG.shapley_report(model, test_split, meta, eval_bs, device)
    result = run_result(cfg, data, runlog, test=test, best=best, stopped_early=stopped_early, device=device,
                        model=model, rebalancer=rebalancer, shapley=shapley)
    if staged:
        result["stages"] = records
    atomic_write_json(out / "result.json", result)
    finish(out, target)
    return result
