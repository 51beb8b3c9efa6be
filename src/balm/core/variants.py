"""The BALM variants evaluated in the paper, built from FCM and GRM by name."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Mapping

from torch import nn

from .baselines import BASELINES, OPTIONS as BASELINE_OPTIONS, build_baseline
from .feature_calibration import FeatureCalibration
from .gradient_rebalancer import GradientRebalancer

VARIANTS = ("none", "fcm-only", "grm-only", "balm", "balm-d", "balm-s", "balm-m")
# every method selectable by name: BALM's variants and the balancing methods it builds on
METHODS = VARIANTS + BASELINES

# name -> (uses FCM, GRM settings fixed by the variant or None for no GRM)
_SPEC: dict[str, tuple[bool, dict[str, Any] | None]] = {
    "none": (False, None),
    "fcm-only": (True, None),
    "grm-only": (False, {"distribution": "kl", "spatial": True, "scale_gradients": True}),
    "balm": (True, {"distribution": "kl", "spatial": True, "scale_gradients": True}),
    "balm-d": (True, {"distribution": "kl", "spatial": False, "scale_gradients": True}),
    "balm-s": (True, {"distribution": "kl", "spatial": True, "scale_gradients": False}),
    "balm-m": (True, {"distribution": "mse", "spatial": True, "scale_gradients": True}),
}

FCM_OPTIONS = ("d_global",)
GRM_OPTIONS = tuple(
    name
    for name, p in inspect.signature(GradientRebalancer.__init__).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("task", "num_classes")
)


@dataclass
class Variant:
    """The plug-in parts of one variant; a part the variant does not use is None."""

    fcm: FeatureCalibration | None
    rebalancer: GradientRebalancer | None
    name: str


def build_variant(
    name: str,
    *,
    dims: Mapping[str, int],
    encoders: Mapping[str, nn.Module],
    embed_dims: Mapping[str, int],
    fusion_head: nn.Linear,
    task: str = "classification",
    num_classes: int | None = None,
    **options: Any,
) -> Variant:
    """Build variant ``name`` (one of :data:`METHODS`: BALM's :data:`VARIANTS` or a baseline of
    :data:`balm.core.baselines.BASELINES`, built by :func:`balm.core.baselines.build_baseline`).

    ``options``: ``d_global`` for FCM and any keyword of :class:`GradientRebalancer` (rho, tau,
    noise, lr, ...). Options of a part the variant lacks are accepted and unused, so one
    configuration can drive every variant; an option the variant fixes (``distribution``,
    ``spatial``, ``scale_gradients``) may only be given with the variant's own value.
    """
    if name in BASELINES:
        return build_baseline(
            name, dims=dims, encoders=encoders, embed_dims=embed_dims, fusion_head=fusion_head,
            task=task, num_classes=num_classes, **options,
        )
    if name not in _SPEC:
        raise ValueError(f"unknown variant {name!r}; choose one of {list(METHODS)}")
    baseline_only = set().union(*BASELINE_OPTIONS.values())
    unknown = sorted(set(options) - set(FCM_OPTIONS) - set(GRM_OPTIONS) - baseline_only)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for variant {name!r}; valid: {sorted(FCM_OPTIONS + GRM_OPTIONS)}")
    use_fcm, fixed = _SPEC[name]
    fcm = FeatureCalibration(dims, d_global=options.get("d_global")) if use_fcm else None
    rebalancer = None
    if fixed is not None:
        grm_options = {k: v for k, v in options.items() if k in GRM_OPTIONS}
        for key, value in fixed.items():
            if key in grm_options and grm_options[key] != value:
                raise ValueError(
                    f"variant {name!r} fixes {key}={value!r}; got {key}={grm_options[key]!r} "
                    f"(pick the variant that has it, one of {list(VARIANTS)})"
                )
            grm_options[key] = value
        rebalancer = GradientRebalancer(
            encoders, embed_dims, fusion_head, task=task, num_classes=num_classes, **grm_options
        )
    return Variant(fcm=fcm, rebalancer=rebalancer, name=name)
