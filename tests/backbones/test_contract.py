"""Every registered backbone meets the contract the BALM plug-in relies on."""

import importlib

import pytest
import torch
from backbone_batches import random_batch
from torch import nn

from balm.backbones.registry import BACKBONES, build_backbone


def _require(name):
    module = BACKBONES[name].split(":")[0]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            pytest.skip(f"backbone {name!r}: module {module} does not exist yet")
        raise


MODALITY_SETS = {
    2: {"audio": 6, "text": 5},
    3: {"audio": 6, "visual": 4, "text": 5},
    4: {"audio": 6, "visual": 4, "text": 5, "depth": 3},
}


@pytest.mark.parametrize("M", sorted(MODALITY_SETS))
@pytest.mark.parametrize("task,out_dim", [("classification", 3), ("regression", 1)])
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_contract(name, task, out_dim, M):
    _require(name)
    torch.manual_seed(0)
    dims = MODALITY_SETS[M]
    model = build_backbone(name, dims, out_dim)
    lengths = [4, 2, 5]
    batch = random_batch(dims, lengths, seed=M, task=task, num_classes=3)
    N = sum(lengths)

    assert list(model.encoders.keys()) == list(dims)
    assert isinstance(model.fusion_head, nn.Linear) and model.fusion_head.out_features == out_dim
    owned = {}
    for m, enc in model.encoders.items():
        ids = {id(p) for p in enc.parameters()}
        assert ids, f"encoder {m} has no parameters"
        for other, o_ids in owned.items():
            assert not ids & o_ids, f"encoders {m} and {other} share parameters"
        owned[m] = ids
    head_ids = {id(p) for p in model.fusion_head.parameters()}
    assert not head_ids & set().union(*owned.values())
    all_ids = {id(p) for p in model.parameters()}
    assert head_ids <= all_ids and set().union(*owned.values()) <= all_ids

    model.train()
    out = model(batch)
    assert out.prediction.shape == ((N, out_dim) if out_dim > 1 else (N,))
    assert out.fused.shape == (N, model.fusion_head.in_features)
    assert set(out.embeddings) == set(dims)
    for m, z in out.embeddings.items():
        assert z.shape == (N, model.embed_dims[m])
    # loss gradients reach every encoder and the head
    targets = batch.targets
    loss = (
        nn.functional.cross_entropy(out.prediction, targets)
        if out_dim > 1
        else nn.functional.mse_loss(out.prediction, targets)
    )
    loss.backward()
    for m, enc in model.encoders.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters()), m
    assert model.fusion_head.weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        out = model(batch)
    head = model.fusion_head(out.fused)
    torch.testing.assert_close(out.prediction, head.squeeze(-1) if out_dim == 1 else head)
