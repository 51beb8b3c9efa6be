"""Backbones by name."""

from __future__ import annotations

import importlib

from .base import Backbone

# name -> "module:Class"; modules are imported on demand
BACKBONES = {
    "late_fusion": "balm.backbones.late_fusion:LateFusion",
    "mmgcn": "balm.backbones.mmgcn:MMGCN",
    "mmdfn": "balm.backbones.mmdfn:MMDFN",
    "gcnet": "balm.backbones.gcnet:GCNet",
    "sdrgnn": "balm.backbones.sdrgnn:SDRGNN",
    "micga": "balm.backbones.micga:MiCGA",
}


def build_backbone(name: str, dims: dict[str, int], out_dim: int, **kwargs) -> Backbone:
    """Build backbone ``name`` for modality dims ``dims`` and ``out_dim`` outputs (1 for regression).

    Keyword arguments go to the backbone's constructor (e.g. ``num_speakers`` for graph models).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    module, cls = BACKBONES[name].split(":")
    return getattr(importlib.import_module(module), cls)(dims, out_dim, **kwargs)
