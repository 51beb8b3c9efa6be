"""The missing-mask operator M(·; r) (supplement Eq. 36-38)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from balm.errors import BalmError

from .exact import exact_counts
from .patterns import decode, paper_counts
from .rates import check_rates
from .reference import reference_masks

STRATEGIES = ("paper", "exact", "reference")


def make_masks(n: int, rates: Sequence[float], seed: int, strategy: str = "exact") -> np.ndarray:
    """Draw a ``(n, M)`` availability mask (True = present) with per-modality missing rates ``rates``.

    Strategies:

    - ``"exact"`` (the default): realised missing rates within ``1/n`` of ``rates`` with no
      all-missing row (paper counts repaired modality by modality, then shuffled); ``ValueError``
      when impossible.
    - ``"paper"`` (Eq. 36-38; the reproduction configs set it): pattern ê gets ``⌊n r̂(ê)⌋`` samples,
      ``r̂(ê) = Π_m [ê^m (1 − r_m) + (1 − ê^m) r_m]``; the all-missing share and the flooring
      leftovers are spread evenly over the M single-modality patterns (ties broken with the
      seeded generator); the pattern list is shuffled with ``numpy.random.default_rng(seed)``.
      Realised rates are low by at most ``Π r / M + 2^M / n`` per modality.
    - ``"reference"``: the public code's unshuffled layout, for reproducing its numbers only.

    No row is ever all-missing. ``M == 1`` is accepted only with rate 0 (all present): to mask a
    modality subset, draw the full mask and select its columns.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown mask strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (number of samples) must be an integer >= 1, got {n!r}")
    n = int(n)
    r = check_rates(rates)
    if not isinstance(r, (list, tuple)):
        raise BalmError(f"expected one missing rate per modality (a sequence), got {rates!r}", key="rates")
    r = np.asarray(r, dtype=np.float64)
    m = r.size
    if m == 1:
        if r[0] != 0.0:
            raise ValueError(
                f"rates[0] = {r[0]!r}: with a single modality the only rate that leaves no sample "
                "without any modality is 0; mask the full modality set and select columns instead"
            )
        return np.ones((n, 1), dtype=bool)
    if m > 16:
        raise ValueError(f"at most 16 modalities are supported (2^M patterns), got M = {m}")
    if strategy == "reference":
        return reference_masks(n, r)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    counts = paper_counts(n, r, rng) if strategy == "paper" else exact_counts(n, r, rng)
    codes = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    return decode(rng.permutation(codes), m)
