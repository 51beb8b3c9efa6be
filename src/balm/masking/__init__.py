"""The missing-mask operator and helpers for missing-rate settings (numpy only)."""

from .operator import STRATEGIES, make_masks
from .patterns import decode, encode, pattern_ratios
from .rates import MissingRates, check_rates, equivalent_smr, realised_rates, shared_rates
from .reference import reference_layout
from .seeds import derive_seed

__all__ = [
    "STRATEGIES",
    "make_masks",
    "realised_rates",
    "derive_seed",
    "shared_rates",
    "equivalent_smr",
    "check_rates",
    "MissingRates",
    "pattern_ratios",
    "encode",
    "decode",
    "reference_layout",
]
