"""Backbones BALM plugs into; each meets the contract in :mod:`balm.backbones.base`."""

from __future__ import annotations

from .base import Backbone, BackboneOutput, Stage, backbone_stages
from .registry import BACKBONES, BackboneContractError, build_backbone, check_backbone, resolve_backbone

__all__ = ["Backbone", "BackboneOutput", "Stage", "backbone_stages", "BACKBONES", "BackboneContractError", "build_backbone", "check_backbone",
           "resolve_backbone"]
