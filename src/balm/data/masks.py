"""Availability masks attached to a dataset: drawn once per split, stored, and reused.

Rule: the masks for rates ``r``, seed ``s`` and a strategy are drawn split by split with
the operator M(·; r) of docs/method.md §1 (:func:`balm.masking.make_masks`), split ``k`` using
the independent seed ``derive_seed(s, k)``. With a cache directory (normally the native
dataset directory), they are written once to ``masks/<key>.npz`` where ``key`` encodes
strategy, seed, rates and a fingerprint of the splits' sequences, and every later call
with the same arguments reads that file back, so every model in a comparison sees the
very same masks.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import replace
from typing import Mapping

from balm.io import file_mode
import numpy as np

from balm.masking.rates import check_rates

from .dataset import Dataset
from .errors import DataError
from .validation import check_mask

CACHE_DIR = "masks"


def split_fingerprint(ds: Dataset) -> str:
    """A short hash of every split's sequence ids and lengths (masks are only valid for these)."""
    h = hashlib.sha256()
    for key, sp in ds.splits.items():
        h.update(key.encode() + b"\x00")
        h.update(np.asarray(sp.lengths, dtype=np.int64).tobytes())
        h.update("\x00".join(sp.sequence_ids).encode() + b"\x01")
    return h.hexdigest()[:12]


def mask_key(rates, seed: int, strategy: str, fingerprint: str) -> str:
    """File stem of the cached masks, e.g. ``paper_seed0_r0.5-0.7-0.3_1a2b3c4d5e6f``."""
    r = "-".join(repr(float(x)) for x in rates)
    return f"{strategy}_seed{int(seed)}_r{r}_{fingerprint}"


def realised(ds: Dataset) -> dict[str, list[float]]:
    """Realised missing rate per split and modality, ``1 - mean(mask)``."""
    from balm.masking import realised_rates

    return {k: [float(v) for v in realised_rates(sp.mask)] for k, sp in ds.splits.items() if sp.mask is not None}


def with_masks(ds: Dataset, masks: Mapping[str, np.ndarray], info: dict | None = None, *, source: str | None = None) -> Dataset:
    """Attach one ``(N, M)`` boolean mask per split (True = present); each is validated.

    Every split needs a mask and no utterance may miss every modality. ``info``
    (e.g. rates, seed, strategy) is recorded in ``mask_info`` with the realised rates.
    """
    missing = [k for k in ds.splits if k not in masks]
    if missing:
        raise DataError(f"no mask for split(s) {missing}", source=source, field="mask")
    extra = [k for k in masks if k not in ds.splits]
    if extra:
        raise DataError(f"masks for unknown split(s) {extra}; the dataset has {list(ds.splits)}", source=source, field="mask")
    splits = {
        k: replace(sp, mask=check_mask(masks[k], sp.num_utterances, sp.modalities, source=source, field=f"mask[{k}]"))
        for k, sp in ds.splits.items()
    }
    out = replace(ds, splits=splits)
    info = dict(info or {"strategy": "user"})
    if info.get("rates") is not None:
        info["rates"] = list(check_rates(info["rates"], ds.modalities, source=source, error=DataError))
    info["modalities"] = list(ds.modalities)
    info["realised"] = realised(out)
    out.mask_info = info
    return out


def draw_masks(ds: Dataset, rates, seed: int, strategy: str = "exact") -> dict[str, np.ndarray]:
    """Fresh masks per split, split ``k`` drawn with seed ``derive_seed(seed, k)``."""
    from balm.masking import derive_seed, make_masks

    rates = check_rates(rates, ds.modalities, error=DataError)
    return {
        k: np.asarray(make_masks(sp.num_utterances, rates, derive_seed(int(seed), k), strategy=strategy), dtype=bool)
        for k, sp in ds.splits.items()
    }


def _cache_path(directory: str, ds: Dataset, rates, seed: int, strategy: str) -> str:
    return os.path.join(directory, CACHE_DIR, mask_key(rates, seed, strategy, split_fingerprint(ds)) + ".npz")


def save_masks(directory: str | os.PathLike, ds: Dataset) -> str:
    """Write the dataset's masks to ``directory/masks/<key>.npz`` (atomic); returns the file."""
    info = ds.mask_info or {}
    if any(sp.mask is None for sp in ds.splits.values()) or info.get("rates") is None:
        raise DataError("the dataset has no drawn masks (rates, seed, strategy) to save", field="mask_info")
    path = _cache_path(os.fspath(directory), ds, info["rates"], info["seed"], info["strategy"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arrays = {f"mask_{k}": sp.mask for k, sp in ds.splits.items()}
    arrays["info"] = np.asarray(json.dumps(info))
    arrays["fingerprint"] = np.asarray(split_fingerprint(ds))
    fd, tmp = tempfile.mkstemp(prefix=".masks-", suffix=".npz", dir=os.path.dirname(path))
    try:
        os.chmod(tmp, file_mode())
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_masks(directory: str | os.PathLike, ds: Dataset, rates, seed: int, strategy: str = "exact") -> Dataset | None:
    """``ds`` with the cached masks for (rates, seed, strategy), or None when none are cached."""
    rates = check_rates(rates, ds.modalities, error=DataError)
    path = _cache_path(os.fspath(directory), ds, rates, seed, strategy)
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        info = json.loads(str(arrays["info"]))
        fp = str(arrays["fingerprint"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"corrupted mask file ({type(exc).__name__}: {exc})", source=path) from None
    if fp != split_fingerprint(ds):
        raise DataError("masks were drawn for other sequences (fingerprint mismatch)", source=path, field="fingerprint")
    masks = {k[len("mask_"):]: v for k, v in arrays.items() if k.startswith("mask_")}
    return with_masks(ds, masks, {k: info[k] for k in ("rates", "seed", "strategy")}, source=path)


def apply_masks(
    ds: Dataset, rates, seed: int, strategy: str = "exact", *, cache: str | os.PathLike | None = None
) -> Dataset:
    """The dataset with per-split masks M(·; r) (docs/method.md §1, Eq. 36–39) drawn once and reused.

    ``rates``: one missing rate per modality (``ds.modalities`` order), each in [0, 1).
    Split ``k`` uses seed ``derive_seed(seed, k)``. With ``cache`` (a directory), masks
    are read from ``cache/masks/<key>.npz`` when present and written there otherwise.
    ``mask_info`` records rates, seed, strategy and realised rates per split.
    """
    rates = check_rates(rates, ds.modalities, error=DataError)
    if cache is not None:
        hit = load_masks(cache, ds, rates, seed, strategy)
        if hit is not None:
            return hit
    out = with_masks(ds, draw_masks(ds, rates, seed, strategy), {"rates": rates, "seed": int(seed), "strategy": strategy})
    if cache is not None:
        save_masks(cache, out)
    return out


def read_mask_file(path: str | os.PathLike, ds: Dataset) -> Dataset:
    """Attach user-supplied masks from an ``.npz`` holding one ``(N, M)`` array per split name."""
    path = os.fspath(path)
    from .npz_reader import read_arrays

    return with_masks(ds, read_arrays(path), {"strategy": "user", "source": os.path.basename(path)}, source=path)
