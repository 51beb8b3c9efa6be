"""The project's one error base: bad input, named by where it came from and which key it is.

Every package may import this module: it imports nothing of balm.
"""

from __future__ import annotations


class BalmError(ValueError):
    """Bad input; the message reads ``<source>: <label> '<key>': <what was expected>``.

    ``source`` is the file (or other origin) and ``key`` the key or field inside it; either may be
    None. Subclasses name the layer: :class:`balm.experiments.config.ConfigError` (a config key)
    and :class:`balm.data.errors.DataError` (a data field, ``label = "field"``).
    """

    label = "key"

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.detail = message
        self.source = source
        self.key = key
        prefix = []
        if source:
            prefix.append(str(source))
        if key:
            prefix.append(f"{self.label} {key!r}")
        super().__init__(": ".join(prefix + [message]))
