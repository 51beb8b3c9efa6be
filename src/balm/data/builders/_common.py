"""Helpers shared by the builders: CSV matrices with located errors, standardisation."""

from __future__ import annotations

import csv

import numpy as np

from ..dataset import Split
from ..errors import DataError


def read_csv_rows(path: str) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return [row for row in csv.reader(fh) if row]
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc})", source=path) from None


def read_csv_matrix(path: str, columns: int) -> np.ndarray:
    """A headerless numeric CSV as a float64 ``(rows, columns)`` array; errors name row and column."""
    rows = read_csv_rows(path)
    out = np.empty((len(rows), columns), dtype=np.float64)
    for i, row in enumerate(rows):
        if len(row) != columns:
            raise DataError(f"row {i} has {len(row)} columns, expected {columns}", source=path, field=f"row {i}")
        try:
            out[i] = [float(v) for v in row]
        except ValueError:
            bad = next(j for j, v in enumerate(row) if not _is_float(v))
            raise DataError(f"row {i}, column {bad}: {row[bad]!r} is not a number", source=path,
                            field=f"row {i}") from None
    return out


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def standardize(splits: dict[str, Split], reference: str = "train") -> dict:
    """Z-score every modality in place with the mean and std of split ``reference``.

    ``x' = (x - mean_train) / std_train`` per feature (a feature constant on the training split
    gets std 1, so it becomes 0 there). Only training rows enter the statistics, so nothing is
    learnt from dev or test. Returns a short record for the dataset's metadata.
    """
    ref = splits[reference]
    for m in ref.modalities:
        x = ref.features[m].astype(np.float64)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std[std < 1e-12] = 1.0
        for sp in splits.values():
            sp.features[m] = ((sp.features[m].astype(np.float64) - mean) / std).astype(np.float32)
    return {"method": "z-score", "statistics_from": reference}
