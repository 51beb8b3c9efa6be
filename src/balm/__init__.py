"""balm: balanced multimodal learning under imbalanced missing rates (BALM plug-in and tools).

The plug-in's public names are imported on first use, so ``import balm`` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "FeatureCalibration": "balm.core.feature_calibration",
    "GradientRebalancer": "balm.core.gradient_rebalancer",
    "Rebalancer": "balm.core.rebalancer",
    "RebalancerOptions": "balm.core.rebalancer",
    "MethodParts": "balm.core.contract",
    "VARIANTS": "balm.core.variants",
    "build_method": "balm.methods",
    "register_method": "balm.methods",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        value = getattr(module, "register" if name == "register_method" else name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'balm' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
