"""Errors raised for bad input data."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data: the message names the file, the key or field and what was expected."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.detail = message
        self.source = source
        self.field = field
        parts = []
        if source:
            parts.append(str(source))
        if field:
            parts.append(f"field {field!r}")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
