"""A progress bar on stderr for long extractions (tqdm when installed; silent otherwise)."""

from __future__ import annotations


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool | None = None):
    """``enabled``: True = always, False = never, None = only when stderr is a terminal."""
    if enabled is False:
        return _Silent()
    try:
        from tqdm.auto import tqdm
    except ModuleNotFoundError:
        return _Silent()
    return tqdm(total=total, desc=desc, unit="item", disable=None if enabled is None else False, leave=False)
