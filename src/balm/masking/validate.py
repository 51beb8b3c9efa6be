"""Validation of user-supplied availability masks."""

from __future__ import annotations

import numpy as np

from balm.data.errors import DataError


def check_mask(
    mask,
    source: str | None = None,
    *,
    num_rows: int | None = None,
    num_modalities: int | None = None,
    field: str | None = None,
) -> np.ndarray:
    """Check a user-supplied availability mask and return it as a ``(N, M)`` bool array.

    Accepts bool arrays and numeric arrays holding only 0/1. Rejects anything that is not
    2-D, a shape other than the expected one, and any row with every modality missing
    (the error names the first such row and how many there are). Raises ``DataError``.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise DataError(f"mask must be a 2-D (N, M) array, got shape {arr.shape}", source=source, field=field)
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "iuf":
            raise DataError(f"mask must be boolean or 0/1 numbers, got dtype {arr.dtype}", source=source, field=field)
        bad = ~((arr == 0) | (arr == 1))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DataError(
                f"mask must hold only 0/1 (or booleans); entry [{r}, {c}] is {arr[r, c].item()!r}",
                source=source,
                field=field,
            )
        arr = arr.astype(bool)
    if num_rows is not None and arr.shape[0] != num_rows:
        raise DataError(f"mask has {arr.shape[0]} rows, expected {num_rows}", source=source, field=field)
    if num_modalities is not None and arr.shape[1] != num_modalities:
        raise DataError(
            f"mask has {arr.shape[1]} columns, expected {num_modalities} (one per modality)",
            source=source,
            field=field,
        )
    empty = ~arr.any(axis=1)
    if empty.any():
        rows = np.flatnonzero(empty)
        raise DataError(
            f"row {rows[0]} has every modality missing ({rows.size} such rows); "
            "each sample must keep at least one modality",
            source=source,
            field=field,
        )
    return np.ascontiguousarray(arr)
