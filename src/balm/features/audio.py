"""openSMILE functionals of audio files (``opensmile`` package, which bundles SMILExtract).

One vector per file: the feature set's functionals over the whole recording, e.g. IS10
(INTERSPEECH 2010 paralinguistics, 1582 values: 38 low-level descriptors and their deltas, 21
functionals each, plus 2 onset functionals and the duration), the audio feature of the IEMOCAP
files the paper uses. Vectors are cached by the file's SHA-256 and the extractor
(:mod:`balm.features.cache`), so extracting the same files again reads them back.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from .deps import require


def _opensmile():
    return require("opensmile", purpose="openSMILE feature extraction")


def feature_sets() -> list[str]:
    """Names accepted by :func:`extract_audio` (openSMILE's ``FeatureSet`` members) besides ``.conf`` paths."""
    return [m.name for m in _opensmile().FeatureSet]


@dataclass
class AudioFeatures:
    features: np.ndarray  # (N, d) float32
    names: list[str]  # d openSMILE feature names
    extractor: dict  # package, version, feature set (for the feature file and the cache)


def resolve_feature_set(feature_set: str):
    """(value for ``opensmile.Smile``, label): a ``FeatureSet`` name (case-insensitive) or a ``.conf`` file."""
    osm = _opensmile()
    by_name = {m.name.lower(): m for m in osm.FeatureSet}
    if feature_set.lower() in by_name:
        m = by_name[feature_set.lower()]
        return m, m.name
    if os.path.isfile(feature_set):
        with open(feature_set, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()[:16]
        return os.path.abspath(feature_set), f"conf-{digest}"
    known = sorted(m.name for m in osm.FeatureSet)
    raise ValueError(f"unknown openSMILE feature set {feature_set!r}: expected one of {known} or the path of a .conf file")


def extract_audio(paths: list[str], feature_set: str = "IS10", *, cache: str | os.PathLike | None = None,
                  hashes: list[str] | None = None, progress: bool | None = None) -> AudioFeatures:
    """openSMILE functionals of ``paths`` (in that order) as a ``(N, d)`` float32 array.

    ``cache``: a folder for :class:`~balm.features.cache.FeatureCache` (None = no cache);
    ``hashes``: the files' SHA-256 when the caller already has them.
    """
    from .cache import FeatureCache
    from .progress import progress_bar
    from balm.io import sha256_file

    osm = _opensmile()
    value, label = resolve_feature_set(feature_set)
    extractor = {"package": "opensmile", "version": osm.__version__, "feature_set": label, "level": "functionals"}
    smile = osm.Smile(feature_set=value, feature_level=osm.FeatureLevel.Functionals, num_workers=1)
    names = list(smile.feature_names)
    paths = [os.fspath(p) for p in paths]
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: audio file not found")
    keys = hashes if hashes is not None else [sha256_file(p) for p in paths]
    store = FeatureCache(cache, f"opensmile-{osm.__version__}-{label}-functionals") if cache is not None else None
    found = store.get(keys) if store is not None else {}
    todo = [i for i, k in enumerate(keys) if k not in found]
    new: dict[str, np.ndarray] = {}
    bar = progress_bar(len(todo), f"openSMILE {label}", progress)
    try:
        for i in todo:
            try:
                row = smile.process_file(paths[i]).to_numpy(dtype=np.float32)
            except Exception as exc:  # SMILExtract / the audio reader report bad files in many ways
                raise ValueError(f"{paths[i]}: openSMILE could not process the file ({exc})") from None
            if row.shape != (1, len(names)) or not np.isfinite(row).all():
                raise ValueError(f"{paths[i]}: openSMILE returned {row.shape} values or non-finite ones, "
                                 f"expected 1 x {len(names)} finite")
            new[keys[i]] = row[0]
            bar.update()
            if store is not None and len(new) % 500 == 0:  # keep work done if interrupted
                store.put(new)
    finally:
        bar.close()
    if store is not None:
        store.put(new)
    found.update(new)
    x = np.stack([found[k] for k in keys]) if keys else np.zeros((0, len(names)), np.float32)
    return AudioFeatures(x.astype(np.float32), names, extractor)
