"""Reader for the dict pickle used by the public BALM, Ada2I and CORECT code.

Layout (one pickled ``dict``)::

    text, audio, visual : {dialogue id: per-utterance feature vectors}   (lists or (n, d) arrays)
    label               : {dialogue id: per-utterance labels}            (ints, or float scores)
    speaker             : {dialogue id: per-utterance speakers}          ('M'/'F', ints or one-hot rows)
    sentence            : {dialogue id: per-utterance transcripts}       (ignored)
    trainVid, testVid   : dialogue ids of each split                     (list / set)
    valVid              : optional dialogue ids of the dev split (CMU-MOSEI)

Modalities are named ``audio, text, visual`` in that order (the order of the mask
columns and of missing rates, as in the public code's masks). ``speaker`` may be
absent (everyone is speaker 0). Task and classes follow :mod:`balm.data.label_space`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence as Seq

from .dataset import Dataset
from .dialogues import encode_speakers, split_from_dialogues
from .errors import DataError
from .label_space import build_dataset
from .safe_pickle import safe_load

MODALITY_KEYS = {"audio": "audio", "text": "text", "visual": "visual"}
SPLIT_KEYS = {"train": "trainVid", "dev": "valVid", "test": "testVid"}


def _ids(obj: Any, key: str, source: str | None) -> list:
    if isinstance(obj, (str, bytes)) or not hasattr(obj, "__iter__"):
        raise DataError(f"expected a collection of dialogue ids, got {type(obj).__name__}", source=source, field=key)
    ids = list(obj)
    # sets carry no order; sort them so that the split (and any seeded carve-out) is reproducible
    return sorted(ids, key=str) if isinstance(obj, (set, frozenset)) else ids


def from_balm_dict(
    obj: Any,
    *,
    source: str | None = None,
    name: str | None = None,
    task: str | None = None,
    num_classes: int | None = None,
    label_names: Seq[str] | None = None,
) -> Dataset:
    """Build a validated :class:`Dataset` from an already unpickled BALM-style dict."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a dict with keys text/audio/visual/label/trainVid/testVid, got {type(obj).__name__}", source=source)
    required = [*MODALITY_KEYS.values(), "label", "trainVid", "testVid"]
    for key in required:
        if key not in obj:
            raise DataError(f"missing key {key!r}; the file has {sorted(map(str, obj))}", source=source, field=key)
    name = name or (os.path.splitext(os.path.basename(source))[0] if source else "dataset")
    features = {m: (k, obj[k]) for m, k in MODALITY_KEYS.items()}
    speakers = ("speaker", obj["speaker"]) if "speaker" in obj else None
    splits, raw_spk, dims = {}, {}, None
    for split, key in SPLIT_KEYS.items():
        if key not in obj or obj[key] is None:
            continue
        sp, spk = split_from_dialogues(
            split, _ids(obj[key], key, source), features, ("label", obj["label"]), speakers, dims=dims, source=source
        )
        dims = sp.dims()
        splits[split], raw_spk[split] = sp, spk
    spk_cols, spk_names = encode_speakers(raw_spk, source=source, field="speaker")
    for k, sp in splits.items():
        sp.speakers = spk_cols[k]
    return build_dataset(
        splits, name=name, fmt="balm-pickle", source=source, speaker_names=spk_names,
        task=task, num_classes=num_classes, label_names=label_names,
    )


def read_balm_pickle(path: str | os.PathLike, **kwargs) -> Dataset:
    """Read a BALM / Ada2I / CORECT dict pickle (loaded with the restricted unpickler)."""
    path = os.fspath(path)
    return from_balm_dict(safe_load(path), source=path, **kwargs)
