"""BALM's variants evaluated in the paper, built from FCM and GRM by name."""

from __future__ import annotations

from typing import Any

from .contract import MethodParts, Target
from .feature_calibration import FeatureCalibration
from .gradient_rebalancer import GradientRebalancer, GRMOptions
from .rebalancer import option_names

VARIANTS = ("none", "fcm-only", "grm-only", "balm", "balm-d", "balm-s", "balm-m")

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


def variant_options(name: str) -> tuple[str, ...]:
    """The options variant ``name`` accepts: ``d_global`` if it has FCM, GRM's if it has GRM."""
    if name not in _SPEC:
        raise ValueError(f"unknown variant {name!r}; choose one of {list(VARIANTS)}")
    use_fcm, fixed = _SPEC[name]
    return (FCM_OPTIONS if use_fcm else ()) + (option_names(GRMOptions) if fixed is not None else ())


def build_variant(name: str, target: Target, **options: Any) -> MethodParts:
    """Build BALM variant ``name`` (one of :data:`VARIANTS`) for ``target``'s modules.

    ``options``: ``d_global`` for variants with FCM and any option of :class:`GRMOptions` for
    variants with GRM (:func:`variant_options`); another name raises ``TypeError``. An option the
    variant fixes (``distribution``, ``spatial``, ``scale_gradients``) may only be given with the
    variant's own value.
    """
    valid = variant_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for variant {name!r}; valid: {sorted(valid)}")
    use_fcm, fixed = _SPEC[name]
    t = target
    fcm = FeatureCalibration(t.dims, d_global=options.get("d_global")) if use_fcm else None
    rebalancer = None
    if fixed is not None:
        grm_options = {k: v for k, v in options.items() if k not in FCM_OPTIONS}
        for key, value in fixed.items():
            if key in grm_options and grm_options[key] != value:
                raise ValueError(
                    f"variant {name!r} fixes {key}={value!r}; got {key}={grm_options[key]!r} "
                    f"(pick the variant that has it, one of {list(VARIANTS)})"
                )
            grm_options[key] = value
        rebalancer = GradientRebalancer(t.encoders, t.embed_dims, t.fusion_head, task=t.task, num_classes=t.num_classes,
                                        **grm_options)
    return MethodParts(name=name, input_module=fcm, rebalancer=rebalancer)
