"""The validation split: kept when the data has one, else carved from the training sequences."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .dataset import Dataset
from .errors import DataError


def ensure_dev(ds: Dataset, ratio: float = 0.1, seed: int = 0) -> Dataset:
    """``ds`` with a ``dev`` split.

    Data that has its own dev split (CMU-MOSEI) is returned unchanged. Otherwise
    ``floor(ratio * S)`` of the S training sequences (at least one, and at least one
    left for training) are drawn without replacement by a generator seeded with
    ``derive_seed(seed, "dev")`` and moved to ``dev`` (file order kept in both splits).
    Masks already attached move with their rows. Call it before drawing masks.
    """
    if "dev" in ds.splits:
        return ds
    if "train" not in ds.splits:
        raise DataError("no train split to carve a dev split from", field="splits")
    if not (0.0 < float(ratio) < 1.0):
        raise DataError(f"dev ratio must lie in (0, 1), got {ratio}", field="dev_ratio")
    from balm.masking import derive_seed

    train = ds.splits["train"]
    S = train.num_sequences
    if S < 2:
        raise DataError(f"cannot carve a dev split from {S} training sequence(s)", field="train")
    n_dev = min(max(int(np.floor(ratio * S)), 1), S - 1)
    rng = np.random.default_rng(derive_seed(int(seed), "dev"))
    dev_idx = np.sort(rng.choice(S, size=n_dev, replace=False))
    keep = np.setdiff1d(np.arange(S), dev_idx)
    splits = {}
    for k, sp in ds.splits.items():
        if k == "train":
            splits["train"] = train.select(keep, name="train")
            splits["dev"] = train.select(dev_idx, name="dev")
        else:
            splits[k] = sp
    order = ["train", "dev", "test"]
    splits = {k: splits[k] for k in order if k in splits}
    meta = dict(ds.metadata or {})
    meta["dev_split"] = {"from": "train", "ratio": float(ratio), "seed": int(seed), "sequences": int(n_dev)}
    out = replace(ds, splits=splits, metadata=meta)
    if ds.mask_info is not None and any(sp.mask is not None for sp in splits.values()):
        from .masks import realised

        out.mask_info = {**ds.mask_info, "realised": realised(out)}
    return out
