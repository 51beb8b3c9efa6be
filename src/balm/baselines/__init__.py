"""Balancing methods BALM is compared with, each a :class:`~balm.core.rebalancer.Rebalancer`.

``ogm-ge`` (Peng et al., CVPR 2022), ``cggm`` (Guo et al., NeurIPS 2024) and ``ada2i`` (Nguyen et
al., ACM MM 2024); equations and deviations from the official code are in docs/baselines.md.
Build them by name with :func:`balm.methods.build_method`.
"""

from .ada2i import Ada2I, Ada2IOptions, AdaptiveFeatureWeighting, AFWOptions
from .cggm import CGGM, CGGMOptions
from .ogm_ge import OGMGE, OGMGEOptions

BASELINES = ("ogm-ge", "cggm", "ada2i")

__all__ = ["BASELINES", "OGMGE", "OGMGEOptions", "CGGM", "CGGMOptions", "Ada2I", "Ada2IOptions",
           "AdaptiveFeatureWeighting", "AFWOptions"]
