"""The BALM plug-in: Feature Calibration (FCM), Gradient Rebalancing (GRM), the rebalancer base
every balancing method subclasses, and the pure functions behind them (torch only)."""

from . import functional
from .contract import MethodParts, Target
from .feature_calibration import FeatureCalibration
from .gradient_rebalancer import GradientRebalancer, GRMOptions
from .rebalancer import Rebalancer, RebalancerOptions
from .variants import VARIANTS, build_variant

__all__ = [
    "FeatureCalibration",
    "GradientRebalancer",
    "GRMOptions",
    "MethodParts",
    "Target",
    "Rebalancer",
    "RebalancerOptions",
    "VARIANTS",
    "build_variant",
    "functional",
]
