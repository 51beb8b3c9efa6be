"""One entry point for every data source: native directories, community files, synthetic sets."""

from __future__ import annotations

import os

from .dataset import Dataset
from .errors import DataError

FORMATS = ("native", "balm-pickle", "mmgcn-pickle", "npz", "gcnet", "mmin", "mmsa")
SYNTHETIC = ("iemocap", "mosei")
_COMMON = {"name", "task", "num_classes", "label_names"}
_OPTIONS = {"gcnet": {"features"}, "mmin": {"features", "cv"}, "mmsa": {"label", "pool"}}


def detect_format(path: str | os.PathLike) -> str:
    """The format of ``path`` where it is unambiguous: a native directory, an MMIN folder
    (``target/`` beside ``A/``, ``V/`` or ``L/``), ``.npz`` or a pickle told apart by reading
    it safely (dict of train/valid/test -> mmsa, other dict -> balm-pickle, 6/7-tuple ->
    gcnet label pickle, 9/10-tuple -> mmgcn-pickle)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        from .native import is_native

        if is_native(path):
            return "native"
        if os.path.isdir(os.path.join(path, "target")) and any(
            os.path.isdir(os.path.join(path, d)) for d in ("A", "V", "L")
        ):
            return "mmin"
        raise DataError("directory is not a balm dataset (no meta.json) nor an MMIN folder (A/ V/ L/ target/)", source=path)
    if not os.path.exists(path):
        raise DataError("file not found", source=path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        return "npz"
    if ext in (".pkl", ".pickle", ".p"):
        from .safe_pickle import safe_load

        return _pickle_kind(safe_load(path), path)
    raise DataError(f"cannot tell the format from extension {ext!r}; pass format= one of {FORMATS}", source=path)


def _pickle_kind(obj, path: str) -> str:
    if isinstance(obj, dict):
        if {"train", "valid", "test"} <= set(obj) and all(isinstance(obj[k], dict) for k in ("train", "valid", "test")):
            return "mmsa"
        return "balm-pickle"
    if isinstance(obj, (tuple, list)):
        return "gcnet" if len(obj) in (6, 7) else "mmgcn-pickle"
    raise DataError(f"a pickle of {type(obj).__name__} is neither the dict nor the tuple layout", source=path)


def load(spec: str | os.PathLike, format: str | None = None, *, seed: int = 0, **kwargs) -> Dataset:
    """Load a validated :class:`Dataset` from ``spec``.

    ``spec`` is a native dataset directory, a file (``format`` one of ``FORMATS``,
    detected when omitted) or ``synthetic:iemocap`` / ``synthetic:mosei`` (generated
    with ``seed``). Extra keyword arguments (``name``, ``task``, ``num_classes``,
    ``label_names``) go to the file readers; ``features`` ({modality: folder or .h5 file})
    to ``gcnet`` (required) and ``mmin``, ``cv`` to ``mmin``, ``label`` and ``pool`` to ``mmsa``.
    """
    spec_s = os.fspath(spec)
    if spec_s.startswith("synthetic:"):
        like = spec_s.split(":", 1)[1]
        if like not in SYNTHETIC:
            raise DataError(f"unknown synthetic set {like!r}; expected one of {SYNTHETIC}", field="spec")
        from .synthetic import make_synthetic
        from .validation import validate_dataset

        return validate_dataset(make_synthetic(like=like, seed=seed), source=spec_s)
    if format is not None and format not in FORMATS:
        raise DataError(f"unknown format {format!r}; expected one of {FORMATS}", source=spec_s, field="format")
    fmt = format or detect_format(spec_s)
    if fmt == "native":
        from .native import load_dataset

        if kwargs:
            raise DataError(f"options {sorted(kwargs)} do not apply to a native dataset", source=spec_s)
        return load_dataset(spec_s)
    extra = set(kwargs) - _COMMON - _OPTIONS.get(fmt, set())
    if extra:
        raise DataError(f"options {sorted(extra)} do not apply to format {fmt!r}", source=spec_s)
    if fmt == "npz":
        from .npz_reader import read_npz

        return read_npz(spec_s, **kwargs)
    if fmt == "mmin":
        from .mmin_reader import read_mmin

        return read_mmin(spec_s, **kwargs)
    from .safe_pickle import safe_load

    obj = safe_load(spec_s)
    if fmt == "gcnet":
        from .gcnet_reader import from_gcnet

        features = kwargs.pop("features", None)
        return from_gcnet(obj, features or {}, source=spec_s, **kwargs)
    if fmt == "mmsa":
        from .mmsa_reader import from_mmsa_dict

        return from_mmsa_dict(obj, source=spec_s, **kwargs)
    if fmt == "balm-pickle":
        from .balm_pickle import from_balm_dict

        return from_balm_dict(obj, source=spec_s, **kwargs)
    from .mmgcn_pickle import from_mmgcn_tuple

    return from_mmgcn_tuple(obj, source=spec_s, **kwargs)
