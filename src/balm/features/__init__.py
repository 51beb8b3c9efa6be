"""Feature extraction between the data layer and the command line: openSMILE audio functionals
(:mod:`balm.features.audio`) and sentence-encoder text embeddings (:mod:`balm.features.text`),
both cached by input hash (:mod:`balm.features.cache`) and written as one ``.npz``
(:mod:`balm.features.store`). The extractors need the ``features`` extra
(``pip install -e '.[features]' in the balm clone``); without it they raise :class:`MissingDependency`.
"""

from .cache import FeatureCache, default_cache_dir
from .deps import MissingDependency, require
from .store import load_features, save_features


def extract_audio(*args, **kwargs):
    """See :func:`balm.features.audio.extract_audio`."""
    from .audio import extract_audio as run

    return run(*args, **kwargs)


def encode_texts(*args, **kwargs):
    """See :func:`balm.features.text.encode_texts`."""
    from .text import encode_texts as run

    return run(*args, **kwargs)


__all__ = ["FeatureCache", "default_cache_dir", "MissingDependency", "require", "load_features", "save_features",
           "extract_audio", "encode_texts"]
