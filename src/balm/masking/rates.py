"""Missing-rate settings: the one check of a rate setting, shared (SMR) rates and the SMR
equivalent of an IMR setting."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from balm.errors import BalmError


class MissingRates(tuple):
    """Missing rates already checked by :func:`check_rates`, one per modality in ``modalities``
    order (``modalities`` is None when only their count was known). A later :func:`check_rates`
    of the same modalities returns it as it is."""

    def __new__(cls, values, modalities: tuple[str, ...] | None = None):
        out = super().__new__(cls, values)
        out.modalities = modalities
        return out

    def __reduce__(self):
        return (MissingRates, (tuple(self), self.modalities))


def _is_sequence(v: Any) -> bool:
    if isinstance(v, np.ndarray):
        return v.ndim == 1
    return isinstance(v, (list, tuple))


def check_rates(
    rates: Any,
    modalities: Sequence[str] | int | None = None,
    *,
    key: str = "rates",
    source: str | None = None,
    error: type[BalmError] = BalmError,
) -> Any:
    """Check a missing-rate setting: every rate a finite number ``r`` with ``0 <= r < 1``.

    ``rates`` is one number (a shared rate), a sequence (one rate per modality, in order), a
    mapping modality -> rate, or None (no rates: it is returned as None).

    - ``modalities`` None: the setting is returned in its own form, as floats (a float, a list
      or a dict): the form a config keeps.
    - ``modalities`` the modality names (or only their number M): the setting is returned as
      :class:`MissingRates` in that order; a number is shared by all M, a sequence must hold M
      rates, a mapping must name each modality once (and needs the names).

    Raises ``error`` (a :class:`BalmError`; the caller's layer picks the subclass) naming
    ``source`` and the offending key: ``rates[1]`` for a sequence entry, ``rates.audio`` for a
    mapping entry.
    """
    if rates is None:
        return None
    names = None if modalities is None or isinstance(modalities, int) else tuple(modalities)
    count = len(names) if names is not None else modalities
    if isinstance(rates, MissingRates) and (
        modalities is None or (rates.modalities == names if names is not None else len(rates) == count)
    ):
        return rates

    def fail(message: str, at: str = key):
        raise error(message, key=at, source=source)

    def one(at: str, r: Any) -> float:
        if isinstance(r, np.generic):
            r = r.item()
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r):
            fail(f"expected a missing rate (a number in [0, 1)), got {r!r} ({'null' if r is None else type(r).__name__})", at)
        r = float(r)
        if not 0.0 <= r < 1.0:
            fail(f"a missing rate must lie in [0, 1), got {r}", at)
        return r

    if isinstance(rates, Mapping):
        if not rates:
            fail("expected one missing rate per modality, got an empty mapping")
        out = {str(m): one(f"{key}.{m}", r) for m, r in rates.items()}
        if count is None:
            return out
        if names is None:
            fail(f"expected {count} missing rates in modality order, got a mapping {out}")
        unknown = [m for m in out if m not in names]
        if unknown:
            fail(f"unknown modality {unknown[0]!r}; the dataset has {list(names)}")
        absent = [m for m in names if m not in out]
        if absent:
            fail(f"no missing rate for modality {absent[0]!r}; give one per modality of {list(names)}")
        return MissingRates([out[m] for m in names], names)
    if _is_sequence(rates):
        if len(rates) == 0:
            fail("expected one missing rate per modality, got an empty list")
        out = [one(f"{key}[{i}]", r) for i, r in enumerate(rates)]
        if count is None:
            return out
        if len(out) != count:
            order = f" of the dataset in the order {list(names)}" if names is not None else ""
            fail(f"expected {count} missing rates, one per modality{order}, got {len(out)}: {out}")
        return MissingRates(out, names)
    r = one(key, rates)
    return r if count is None else MissingRates([r] * count, names)


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
    return tuple(check_rates(r, int(num_modalities)))


def equivalent_smr(rates: Sequence[float]) -> float:
    """Shared rate equivalent to an IMR setting (supplement Eq. 39): ``Σ_m r_m = M r``, i.e. the mean."""
    return float(np.mean(check_rates(rates, len(rates))))
