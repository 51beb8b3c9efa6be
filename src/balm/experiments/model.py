"""A run's model: backbone + balancing method (:func:`build_model`) and its checkpoint.

``checkpoint.pt`` holds the config, the model's metadata (task, dims, classes, modalities) and
the best state dicts as plain types, so that :func:`load_checkpoint` rebuilds the model alone.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from balm.data.batch import Batch
from balm.data.dataset import Dataset

from .config import Config, ConfigError, backbone_parameters
from balm.io import atomic_write
from .prepare import PreparedData, check_config

CHECKPOINT_FORMAT = "balm-checkpoint/2"  # /2: the input module is stored as input_module.*


class BalmModel(nn.Module):
    """A backbone with the method's optional input module in front (BALM's FCM, Ada2I's AFW):
    ``forward(batch) = backbone(input_module(batch))``."""

    def __init__(self, backbone: nn.Module, input_module: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.input_module = input_module
        self._output_checked = False

    def calibrate(self, batch: Batch) -> Batch:
        """The batch with calibrated features x̂ (unchanged without an input module)."""
        if self.input_module is None:
            return batch
        return dataclasses.replace(batch, features=self.input_module(batch.features, batch.masks, batch.valid))

    def forward(self, batch: Batch):
        out = self.backbone(self.calibrate(batch))
        if not self._output_checked:  # the contract's output part, once (the rest is checked at build)
            from balm.backbones.registry import check_output

            check_output(self.backbone, out, int(batch.valid.sum()))
            self._output_checked = True
        return out


def resolve_device(name: str) -> torch.device:
    """The torch device of the config key ``device``; a CUDA device without CUDA is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"not a torch device: {exc}", key="device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{name!r} asked for, but CUDA is not available here; use 'cpu' or 'auto'", key="device")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"{name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist", key="device")
    return dev


def _num_speakers(ds: Dataset) -> int:
    top = max((int(sp.speakers.max()) + 1 for sp in ds.splits.values() if sp.speakers.size), default=1)
    return max(top, len(ds.speaker_names or []), 1)


def _meta(ds: Dataset, modalities: tuple[str, ...]) -> dict:
    return {
        "task": ds.task,
        "dims": {m: d for m, d in ds.dims().items() if m in modalities},
        "num_classes": ds.num_classes,
        "label_names": ds.label_names,
        "modalities": list(modalities),
        "num_speakers": _num_speakers(ds),
    }


def model_meta(data: PreparedData) -> dict:
    """What :func:`build_model` needs of the data: task, dims, classes, modalities, speakers."""
    return _meta(data.dataset, data.modalities)


def shared_options(cfg: Config) -> dict:
    """The config's top-level method settings, offered to every method (each takes those it has)."""
    return dict(d_global=cfg.d_global, rho=cfg.rho, tau=cfg.tau, noise=cfg.noise, missing_aware=cfg.missing_aware,
                coefficients=cfg.coefficients, delta_mode=cfg.delta_mode,
                lr=cfg.lr if cfg.head_lr is None else cfg.head_lr, weight_decay=cfg.weight_decay,
                start_epoch=cfg.modulation_start, end_epoch=cfg.modulation_end)


def build_model(cfg: Config, meta: dict, device: torch.device) -> tuple[BalmModel, Any]:
    """Backbone + method, seeded with ``cfg.seed``; returns (model on ``device``, rebalancer or None)."""
    from balm.backbones import build_backbone
    from balm.backbones.registry import BackboneContractError
    from balm.methods import build_method

    torch.manual_seed(cfg.seed)
    task, dims = meta["task"], meta["dims"]
    out_dim = 1 if task == "regression" else int(meta["num_classes"])
    kw = dict(cfg.backbone_options)
    params = backbone_parameters(cfg.backbone)
    if "num_speakers" in params and "num_speakers" not in kw:
        kw["num_speakers"] = meta["num_speakers"]
    try:
        backbone = build_backbone(cfg.backbone, dims, out_dim, **kw).to(device)
    except BackboneContractError as exc:
        raise ConfigError(exc.detail, key="backbone") from None
    except (ValueError, TypeError) as exc:  # an option value the constructor rejects
        raise ConfigError(f"cannot build {cfg.backbone} for modalities {list(dims)} with backbone_options "
                          f"{dict(cfg.backbone_options)}: {exc}", key="backbone_options") from None
    from balm.backbones.base import backbone_stages

    try:
        stages = backbone_stages(backbone)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"backbone {cfg.backbone}: {exc}", key="backbone") from None
    if len(stages) > 1 and cfg.method != "none":
        raise ConfigError(f"{cfg.backbone} trains in stages ({', '.join(st.name for st in stages)}) as a complete "
                          f"method of its own; it takes method: none, got {cfg.method!r}", key="method")
    try:
        parts = build_method(
            cfg.method,
            dims=dims,
            encoders=backbone.encoders,
            embed_dims=backbone.embed_dims,
            fusion_head=backbone.fusion_head,
            task=task,
            num_classes=meta["num_classes"] if task == "classification" else None,
            shared=shared_options(cfg),
            **cfg.method_options,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot build {cfg.backbone} + {cfg.method} for modalities {list(dims)}: {exc}",
                          key="method_options" if cfg.method_options else "method") from None
    inputs = parts.input_module.to(device) if parts.input_module is not None else None
    rebalancer = parts.rebalancer.to(device) if parts.rebalancer is not None else None
    return BalmModel(backbone, inputs), rebalancer


_BUILT: set[str] = set()


def check_buildable(cfg: Config, dataset: Dataset | None = None) -> None:
    """The dataset-dependent checks of ``cfg``, then one build of its model on the CPU (cached per
    architecture), so that an option the backbone or the method rejects fails before any work,
    as a ConfigError."""
    ds, selection = check_config(cfg, dataset)
    meta = _meta(ds, selection.modalities)
    key = json.dumps([meta, cfg.backbone, cfg.backbone_options, cfg.method, cfg.method_options, cfg.d_global, cfg.modulation_start,
                      cfg.modulation_end], sort_keys=True, default=str)
    if key in _BUILT:
        return
    try:
        build_model(cfg, meta, torch.device("cpu"))
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot build {cfg.backbone} + {cfg.method} for modalities {list(selection.modalities)}: "
                          f"{exc}", key="backbone_options" if cfg.method == "none" else "method") from None
    _BUILT.add(key)


def _to_cpu(obj: Any) -> Any:
    """Tensors (inside dicts, lists and tuples) detached and on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: Path, cfg: Config, meta: dict, model: BalmModel, rebalancer, best_state: dict) -> None:
    """State dicts and the config as plain types (loadable with ``torch.load(weights_only=True)``)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": cfg.to_dict(),
        "meta": meta,
        "model": {k: v.detach().cpu() for k, v in best_state.items()},
        "rebalancer": None if rebalancer is None else _to_cpu(rebalancer.state_dict()),
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
