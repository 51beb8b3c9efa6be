"""Missing-rate vectors: validation, shared (SMR) rates and the SMR equivalent of an IMR setting."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def validate_rates(rates: Sequence[float]) -> np.ndarray:
    """Return ``rates`` as a float64 ``(M,)`` array after checking each lies in [0, 1).

    Raises ``ValueError`` naming the offending index and value.
    """
    if isinstance(rates, (str, bytes)) or np.ndim(rates) != 1:
        raise ValueError(f"rates must be a 1-D sequence of floats in [0, 1), got {rates!r}")
    out = np.empty(len(rates), dtype=np.float64)
    for i, r in enumerate(rates):
        try:
            v = float(r)
        except (TypeError, ValueError):
            raise ValueError(f"rates[{i}] = {r!r} is not a number; expected a float in [0, 1)") from None
        if not (0.0 <= v < 1.0):  # also rejects NaN
            raise ValueError(f"rates[{i}] = {v!r} is outside [0, 1); a missing rate must satisfy 0 <= r < 1")
        out[i] = v
    if out.size == 0:
        raise ValueError("rates is empty; give one missing rate per modality")
    return out


def realised_rates(mask: np.ndarray) -> np.ndarray:
    """Fraction of missing entries per column of a ``(N, M)`` availability mask (True = present)."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.shape[0] == 0:
        raise ValueError(f"mask must be a non-empty 2-D (N, M) array, got shape {m.shape}")
    return 1.0 - m.astype(bool).mean(axis=0)


def shared_rates(r: float, num_modalities: int) -> tuple[float, ...]:
    """The shared missing rate (SMR) setting: ``r_m = r`` for all M modalities."""
    if int(num_modalities) != num_modalities or num_modalities < 1:
        raise ValueError(f"num_modalities must be a positive integer, got {num_modalities!r}")
    validate_rates([r])
    return tuple(float(r) for _ in range(int(num_modalities)))


def equivalent_smr(rates: Sequence[float]) -> float:
    """Shared rate equivalent to an IMR setting (supplement Eq. 39): ``Σ_m r_m = M r``, i.e. the mean."""
    return float(validate_rates(rates).mean())
