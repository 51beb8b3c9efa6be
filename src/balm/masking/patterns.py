"""Availability patterns and the paper's pattern counts (supplement Eq. 36-38).

A pattern ``ê ∈ {0,1}^M`` is encoded as the integer ``Σ_m ê^m 2^m`` (bit m set = modality m
present); code 0 is the all-missing pattern and ``2^M - 1`` the complete one.
"""

from __future__ import annotations

import numpy as np

# N r̂ values within this distance below an integer count as that integer, so that
# binary rounding (e.g. 10 * 0.3 = 2.9999999999999996) does not lose a sample.
FLOOR_GUARD = 1e-9


def pattern_bits(num_modalities: int) -> np.ndarray:
    """``(2^M, M)`` bool array: row c is the pattern with code c."""
    codes = np.arange(2**num_modalities, dtype=np.int64)
    return ((codes[:, None] >> np.arange(num_modalities)) & 1).astype(bool)


def decode(codes: np.ndarray, num_modalities: int) -> np.ndarray:
    """``(N,)`` pattern codes -> ``(N, M)`` bool availability mask."""
    return ((np.asarray(codes, dtype=np.int64)[:, None] >> np.arange(num_modalities)) & 1).astype(bool)


def encode(mask: np.ndarray) -> np.ndarray:
    """``(N, M)`` bool mask -> ``(N,)`` pattern codes."""
    m = np.asarray(mask, dtype=np.int64)
    return (m << np.arange(m.shape[1])).sum(axis=1)


def single_codes(num_modalities: int) -> np.ndarray:
    """Codes of the M patterns with exactly one modality present, in modality order."""
    return (1 << np.arange(num_modalities)).astype(np.int64)


def pattern_ratios(rates: np.ndarray) -> np.ndarray:
    """``r̂(ê) = Π_m [ê^m (1 − r_m) + (1 − ê^m) r_m]`` for every code (Eq. 36)."""
    bits = pattern_bits(len(rates))
    return np.where(bits, 1.0 - rates, rates).prod(axis=1)


def paper_counts(n: int, rates: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Sample count per pattern code under the paper's operator.

    ``n(ê) = ⌊n r̂(ê)⌋`` for every pattern with at least one modality present; the
    all-missing share and the flooring leftovers (``left`` samples) are spread over the M
    single-modality patterns: each gets ``left // M``, and the ``left % M`` remaining ones
    go to distinct single patterns chosen with ``rng`` (the first ones in modality order
    when ``rng`` is None).
    """
    m = len(rates)
    counts = np.floor(n * pattern_ratios(rates) + FLOOR_GUARD).astype(np.int64)
    counts[0] = 0
    left = n - int(counts.sum())
    singles = single_codes(m)
    counts[singles] += left // m
    extra = left % m
    if extra:
        chosen = singles[:extra] if rng is None else rng.choice(singles, size=extra, replace=False)
        counts[chosen] += 1
    return counts
