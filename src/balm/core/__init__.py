"""The BALM plug-in: Feature Calibration (FCM) and Gradient Rebalancing (GRM) modules."""

from . import functional
from .feature_calibration import FeatureCalibration
from .gradient_rebalancer import GradientRebalancer
from .variants import METHODS, VARIANTS, Variant, build_variant

__all__ = ["FeatureCalibration", "GradientRebalancer", "Variant", "VARIANTS", "METHODS", "build_variant", "functional"]
