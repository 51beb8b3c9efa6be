"""The ``.npz`` written by ``balm features``: one row per input, with ids and the extractor's name.

Arrays: ``ids`` (N,) str (file stems or text ids), ``features`` (N, d) float32,
``feature_names`` (d,) str (openSMILE's names; absent for text encoders), ``extractor`` (a 0-d
str, JSON: package, version, feature set or model). Opened with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os

import numpy as np


def save_features(path: str | os.PathLike, ids, features: np.ndarray, *, feature_names=None,
                  extractor: dict | None = None) -> None:
    """Write the feature file atomically (a temporary file beside ``path``, then rename)."""
    from balm.io import atomic_write

    x = np.ascontiguousarray(features, dtype=np.float32)
    ids = np.asarray(list(ids), dtype=str)
    if x.ndim != 2 or x.shape[0] != ids.shape[0]:
        raise ValueError(f"features must be (N, d) with N = {ids.shape[0]} ids, got shape {x.shape}")
    arrays = {"ids": ids, "features": x, "extractor": np.asarray(json.dumps(extractor or {}, sort_keys=True))}
    if feature_names is not None:
        arrays["feature_names"] = np.asarray(list(feature_names), dtype=str)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)


def load_features(path: str | os.PathLike) -> dict:
    """``{"ids": list, "features": (N, d), "feature_names": list | None, "extractor": dict}``."""
    with np.load(path, allow_pickle=False) as z:
        return {
            "ids": z["ids"].tolist(),
            "features": z["features"],
            "feature_names": z["feature_names"].tolist() if "feature_names" in z else None,
            "extractor": json.loads(str(z["extractor"])),
        }
