"""Where the tests find the real release files: ``../shared/data`` from the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def real_folder(name: str) -> Path:
    """``../shared/data/<name>``, or skip the test with the reason when it is absent."""
    path = SHARED / name
    if not path.is_dir():
        reason = f"real data not found: {path} is absent (CI lays ../shared/data beside the repository)"
        print(reason)
        pytest.skip(reason)
    return path
