import pytest
import torch
from torch import nn

import balm
from balm.core import VARIANTS, FeatureCalibration, GradientRebalancer, build_variant

DIMS = {"audio": 6, "text": 5, "visual": 4}


def parts():
    encoders = nn.ModuleDict({m: nn.Linear(d, 8) for m, d in DIMS.items()})
    return dict(dims=DIMS, encoders=encoders, embed_dims={m: 8 for m in DIMS}, fusion_head=nn.Linear(24, 3))


# name -> (FCM, distribution, scale_gradients, spatial)
EXPECTED = {
    "none": (False, None, None, None),
    "fcm-only": (True, None, None, None),
    "grm-only": (False, "kl", True, True),
    "balm": (True, "kl", True, True),
    "balm-d": (True, "kl", True, False),
    "balm-s": (True, "kl", False, True),
    "balm-m": (True, "mse", True, True),
}


def test_variant_names_are_the_documented_ones():
    assert VARIANTS == tuple(EXPECTED) == balm.VARIANTS
    assert balm.build_variant is build_variant and balm.FeatureCalibration is FeatureCalibration


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_builds_its_parts(name):
    fcm, dist, scale, spatial = EXPECTED[name]
    v = build_variant(name, **parts(), num_classes=3, rho=1.4, tau=0.3, d_global=5)
    assert v.name == name
    assert (v.fcm is not None) == fcm
    if fcm:
        assert isinstance(v.fcm, FeatureCalibration) and v.fcm.d_global == 5
    if dist is None and scale is None:
        assert v.rebalancer is None
    else:
        r = v.rebalancer
        assert isinstance(r, GradientRebalancer)
        assert (r.distribution, r.scale_gradients, r.spatial) == (dist, scale, spatial)
        assert (r.rho, r.tau) == (1.4, 0.3)


def test_balm_s_estimates_mu_but_leaves_gradients():
    torch.manual_seed(0)
    p = parts()
    v = build_variant("balm-s", **p)
    x = {m: torch.randn(10, d) for m, d in DIMS.items()}
    z = {m: p["encoders"][m](x[m]) for m in DIMS}
    pred = p["fusion_head"](torch.cat(list(z.values()), -1))
    y = torch.randint(0, 3, (10,))
    nn.functional.cross_entropy(pred, y).backward()
    before = {n: q.grad.clone() for n, q in p["encoders"].named_parameters()}
    v.rebalancer.rebalance_(z, pred, y)
    assert all(torch.equal(before[n], q.grad) for n, q in p["encoders"].named_parameters())
    assert v.rebalancer.alignment_loss().item() > 0
    assert set(v.rebalancer.stats["mu"]) == set(DIMS)


def test_errors():
    with pytest.raises(ValueError, match=r"unknown variant 'balm-x'.*'balm-d'.*'ogm-ge'"):
        build_variant("balm-x", **parts())
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['rhoo'\]"):
        build_variant("balm", **parts(), rhoo=1.2)
    with pytest.raises(TypeError, match="rhoo"):
        build_variant("none", **parts(), rhoo=1.2)
    with pytest.raises(ValueError, match="fixes spatial=True"):
        build_variant("balm", **parts(), spatial=False)
    # the variant's own value is accepted; options of an absent part are unused
    assert build_variant("balm-d", **parts(), spatial=False).rebalancer.spatial is False
    assert build_variant("fcm-only", **parts(), rho=1.5).rebalancer is None


def test_baselines_are_built_by_name():
    from balm.core.baselines import BASELINES
    from balm.core.variants import METHODS

    dims = {"a": 4, "b": 3}
    enc = nn.ModuleDict({m: nn.Linear(d, 5) for m, d in dims.items()})
    head = nn.Linear(10, 3)
    assert set(BASELINES) <= set(METHODS)
    for name in BASELINES:
        v = build_variant(name, dims=dims, encoders=enc, embed_dims={m: 5 for m in dims}, fusion_head=head, num_classes=3)
        assert v.name == name and v.rebalancer is not None
        assert set(v.rebalancer.touched()) == set(dims)
    # a BALM option is accepted (unused) by a baseline, and a baseline option by a BALM variant
    build_variant("ogm-ge", dims=dims, encoders=enc, embed_dims={m: 5 for m in dims}, fusion_head=head, num_classes=3, tau=0.3)
    build_variant("balm", dims=dims, encoders=enc, embed_dims={m: 5 for m in dims}, fusion_head=head, num_classes=3, alpha=0.2)
