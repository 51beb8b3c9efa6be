"""Optional packages of the ``features`` extra, imported on first use with a clear error."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependency(ModuleNotFoundError):
    """An optional package is not installed; the message names it and the extra that installs it."""


def require(module: str, package: str | None = None, *, extra: str = "features", purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming the PyPI ``package`` and ``extra``."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but one of its own imports failed: show that error
        package = package or module
        what = f"{purpose} needs" if purpose else "this needs"
        raise MissingDependency(
            f"{what} the {package!r} package, which is not installed: pip install -e '.[{extra}]' in the "
            f"balm clone (or pip install {package})",
            name=module,
        ) from None
