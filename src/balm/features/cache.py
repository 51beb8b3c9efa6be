"""A content-addressed cache of feature vectors: one ``.npz`` per extractor, keyed by input hash.

``DIR/<namespace>.npz`` holds ``keys`` (K,) (the SHA-256 of each input: a file's bytes or a
text's UTF-8) and ``values`` (K, d) float32. The namespace names the extractor and everything
that changes its output (package version, feature set, model weights), so a cached vector is
reused only for the same input and the same extractor. Updates rewrite the file atomically.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np


def default_cache_dir() -> Path:
    """``$BALM_CACHE``, else ``$XDG_CACHE_HOME/balm/features``, else ``~/.cache/balm/features``."""
    if os.environ.get("BALM_CACHE"):
        return Path(os.environ["BALM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "balm" / "features"


class FeatureCache:
    """Vectors of one extractor (``namespace``) under folder ``root``, looked up by input hash."""

    def __init__(self, root: str | os.PathLike, namespace: str):
        if not re.fullmatch(r"[A-Za-z0-9._+-]+", namespace):
            raise ValueError(f"cache namespace {namespace!r} must be letters, digits, '.', '_', '+', '-'")
        self.path = Path(root) / f"{namespace}.npz"
        self._data: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._data is None:
            self._data = {}
            if self.path.exists():
                try:
                    with np.load(self.path, allow_pickle=False) as z:
                        keys, values = z["keys"], z["values"]
                except (OSError, ValueError, KeyError) as exc:
                    raise ValueError(f"{self.path}: damaged feature cache ({exc}); delete it to rebuild") from None
                self._data = {str(k): values[i] for i, k in enumerate(keys)}
        return self._data

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        """The cached vectors of those ``keys`` that are present."""
        data = self._load()
        return {k: data[k] for k in keys if k in data}

    def put(self, items: dict[str, np.ndarray]) -> None:
        """Add vectors and rewrite the cache file atomically (keys sorted: same content, same bytes)."""
        if not items:
            return
        from balm.io import atomic_write

        data = self._load()
        data.update({k: np.asarray(v, dtype=np.float32) for k, v in items.items()})
        keys = sorted(data)
        values = np.stack([data[k] for k in keys])

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, keys=np.asarray(keys, dtype=str), values=values)

        atomic_write(self.path, write)
