"""The public BALM code's mask layout: the paper's counts laid out in a fixed pattern order.

Only for reproducing numbers of the public code. Nothing is shuffled, so the first samples
(the first dialogues) are complete and the last ones keep a single modality: whole dialogues
lose the same modalities. Like the paper's operator, the all-missing share is handed to the
single-modality patterns, so every realised missing rate is biased low by about Π_m r_m / M.
"""

from __future__ import annotations

import itertools

import numpy as np

from .patterns import decode


def reference_layout(num_modalities: int) -> tuple[list[int], list[int]]:
    """Pattern codes in layout order and the order in which single patterns take leftovers.

    For M = 3 (modalities a, t, v in column order) the public code lays out
    ``atv, at, tv, av, a, t, v`` and then splits the leftovers ``left // 3`` to ``a``,
    ``left // 3`` to ``v`` and the rest to ``t``. For other M (which the public code does not
    support) the layout generalises as: patterns by decreasing number of present modalities,
    within a level in ``itertools.product([True, False], repeat=M)`` order; leftovers go
    ``left // M`` to each single pattern in modality order, the last one taking the rest.
    """
    if num_modalities == 3:
        order = [0b111, 0b011, 0b110, 0b101, 0b001, 0b010, 0b100]
        return order, [0b001, 0b100, 0b010]
    pats = [p for p in itertools.product([True, False], repeat=num_modalities) if any(p)]
    pats.sort(key=lambda p: -sum(p))  # stable: keeps product order within a level
    order = [sum(1 << j for j, b in enumerate(p) if b) for p in pats]
    return order, [1 << j for j in range(num_modalities)]


def reference_codes(n: int, rates: np.ndarray) -> np.ndarray:
    """``(n,)`` pattern codes in the public code's order (no shuffle)."""
    m = len(rates)
    order, leftover_order = reference_layout(m)
    rs = [float(r) for r in rates]
    codes, reps = [], []
    for code in order:
        x = float(n)  # multiplied left to right in Python floats and truncated, as the public code does
        for j in range(m):
            x = x * ((1.0 - rs[j]) if (code >> j) & 1 else rs[j])
        codes.append(code)
        reps.append(int(x))
    left = n - sum(reps)
    share = left // m
    for i, code in enumerate(leftover_order):
        codes.append(code)
        reps.append(share if i < m - 1 else left - (m - 1) * share)
    return np.repeat(np.asarray(codes, dtype=np.int64), reps)


def reference_masks(n: int, rates: np.ndarray) -> np.ndarray:
    return decode(reference_codes(n, rates), len(rates))
