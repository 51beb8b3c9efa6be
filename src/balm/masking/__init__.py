"""The missing-mask operator and helpers for missing-rate settings (numpy only)."""

from .operator import STRATEGIES, make_masks
from .patterns import decode, encode, pattern_ratios
from .rates import equivalent_smr, realised_rates, shared_rates, validate_rates
from .reference import reference_layout
from .seeds import derive_seed

__all__ = [
    "STRATEGIES",
    "make_masks",
    "realised_rates",
    "derive_seed",
    "shared_rates",
    "equivalent_smr",
    "validate_rates",
    "pattern_ratios",
    "encode",
    "decode",
    "reference_layout",
]
