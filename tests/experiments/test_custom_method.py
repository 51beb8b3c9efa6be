"""The tiny method of docs/plugin.md ("Add your own method"): registered, checked against its
formula, and trained by the runner like a built-in method."""

import json
import re
from pathlib import Path

import pytest
import torch

from balm import methods
from balm.experiments.config import Config, ConfigError
from balm.experiments.trainer import train
from exp_helpers import base_config
from tiny_rebalance import backward, make_setup

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugin.md"


@pytest.fixture()
def norm_match():
    text = DOC.read_text(encoding="utf-8")
    found = re.findall(r"<!-- method-start -->\s*```python\n(.*?)```\s*<!-- method-end -->", text, re.S)
    assert len(found) == 1
    ns: dict = {}
    exec(compile(found[0], str(DOC), "exec"), ns)
    yield ns["NormMatch"]
    methods.unregister("norm-match")


def test_the_doc_method_scales_by_its_formula(norm_match):
    assert methods.method_options("norm-match")[-1] == "strength"
    model, rb, x, y, masks = make_setup(norm_match, M=3, strength=0.5)
    pred, z = backward(model, rb, x, y)
    norms = {m: torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.encoders[m].parameters()]))
             for m in rb.modalities}
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    rb.rebalance_(z, pred.detach(), y, masks)
    mean = sum(norms.values()) / 3
    for n, p in model.named_parameters():
        if n.startswith("encoders."):
            k = (mean / norms[n.split(".")[1]]) ** 0.5
            torch.testing.assert_close(p.grad, before[n] * k, rtol=1e-5, atol=1e-8)
        else:
            assert torch.equal(p.grad, before[n])
    assert set(rb.stats["coeff"]) == set(rb.modalities)


def test_the_doc_method_trains_with_the_runner(norm_match, tiny_data, tmp_path):
    cfg = Config.from_dict(base_config(tiny_data, method="norm-match", method_options={"strength": 0.5}))
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result["status"] == "finished" and result["config"]["method"] == "norm-match"
    steps = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    coeffs = [s["coeff"] for s in steps if s["kind"] == "step"]
    assert coeffs and all(set(c) == {"audio", "text", "visual"} for c in coeffs)
    assert any(abs(v - 1.0) > 1e-3 for c in coeffs for v in c.values())  # it did rescale
    with pytest.raises(ConfigError, match=r"method 'norm-match' takes the options: .*strength"):
        Config.from_dict(base_config(tiny_data, method="norm-match", method_options={"alpha": 0.1}))
