"""Runs, verbatim, the integration snippet shown in the README and in docs/plugin.md."""

import contextlib
import io
import math
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "plugin.md"
README = ROOT / "README.md"


def snippet(path: Path = DOC) -> str:
    text = path.read_text(encoding="utf-8")
    found = re.findall(r"<!-- integration-start -->\s*```python\n(.*?)```\s*<!-- integration-end -->", text, re.S)
    assert len(found) == 1, f"{path.name} must hold exactly one integration snippet"
    return found[0]


def test_readme_shows_the_same_snippet():
    assert snippet(README) == snippet(DOC)


def test_integration_snippet_runs_and_trains():
    code = snippet()
    assert 10 <= len(code.strip().splitlines()) <= 30
    torch.manual_seed(0)
    ns: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), ns)
    grm, fcm, encoders = ns["grm"], ns["fcm"], ns["encoders"]
    stats = grm.stats
    assert stats["guard"]["steps"] == 3.0
    assert set(stats["mu"]) == {"audio", "text", "video"}
    assert all(math.isfinite(v) and 0 <= v <= grm.rho for v in stats["mu"].values())
    assert str(stats["mu"]) in out.getvalue()
    # the heads trained and the spatial term is live for the next step
    assert all(v > 0 for v in stats["head_loss"].values())
    assert grm.alignment_loss().item() > 0
    # the plug-in only references the user's modules
    assert not any(k.startswith(("encoders", "fusion")) for k in grm.state_dict())
    assert set(fcm.last_gates) == {"audio", "text", "video"}
