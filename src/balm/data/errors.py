"""Errors raised for bad input data."""

from __future__ import annotations

from balm.errors import BalmError


class DataError(BalmError):
    """Bad input data: the message names the file, the key or field and what was expected."""

    label = "field"

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None, key: str | None = None):
        super().__init__(message, source=source, key=field if field is not None else key)

    @property
    def field(self) -> str | None:
        return self.key
