import pytest
import torch
from torch import nn

import balm
from balm import methods
from balm.baselines import BASELINES
from balm.core import VARIANTS, FeatureCalibration, GradientRebalancer
from balm.methods import build_method

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
    assert methods.names()[: len(VARIANTS) + len(BASELINES)] == VARIANTS + BASELINES
    assert balm.build_method is build_method and balm.FeatureCalibration is FeatureCalibration


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_builds_its_parts(name):
    fcm, dist, scale, spatial = EXPECTED[name]
    shared = {"rho": 1.4, "tau": 0.3, "d_global": 5, "lam": 0.5}  # lam: CGGM's, unused here
    v = build_method(name, **parts(), num_classes=3, shared=shared)
    assert v.name == name
    assert (v.input_module is not None) == fcm
    if fcm:
        assert isinstance(v.input_module, FeatureCalibration) and v.input_module.d_global == 5
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
    v = build_method("balm-s", **p)
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
    with pytest.raises(ValueError, match=r"unknown method 'balm-x'.*'balm-d'.*'ogm-ge'"):
        build_method("balm-x", **parts())
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['rhoo'\] for method 'balm'"):
        build_method("balm", **parts(), rhoo=1.2)
    with pytest.raises(TypeError, match="rhoo"):
        build_method("none", **parts(), rhoo=1.2)
    with pytest.raises(ValueError, match="fixes spatial=True"):
        build_method("balm", **parts(), spatial=False)
    # the variant's own value is accepted
    assert build_method("balm-d", **parts(), spatial=False).rebalancer.spatial is False
    # an option of a part the method lacks is an error as an option, unused as a shared setting
    with pytest.raises(TypeError, match=r"\['rho'\] for method 'fcm-only'; valid: \['d_global'\]"):
        build_method("fcm-only", **parts(), rho=1.5)
    assert build_method("fcm-only", **parts(), shared={"rho": 1.5}).rebalancer is None
    with pytest.raises(TypeError, match=r"\['alpha'\] for method 'balm'"):
        build_method("balm", **parts(), alpha=0.2)


def test_each_method_accepts_exactly_its_classes_options():
    from balm.baselines import AFWOptions, Ada2IOptions, CGGMOptions, OGMGEOptions
    from balm.core import GRMOptions
    from balm.core.rebalancer import option_names

    assert methods.method_options("none") == ()
    assert methods.method_options("fcm-only") == ("d_global",)
    assert methods.method_options("balm") == ("d_global",) + option_names(GRMOptions)
    assert methods.method_options("grm-only") == option_names(GRMOptions)
    assert methods.method_options("ogm-ge") == option_names(OGMGEOptions)
    assert methods.method_options("cggm") == option_names(CGGMOptions)
    assert set(methods.method_options("ada2i")) == set(option_names(Ada2IOptions)) | set(option_names(AFWOptions)) | {"afw"}
    assert "magnitude" in option_names(CGGMOptions) and "rho" not in option_names(CGGMOptions)


def test_baselines_are_built_by_name():
    dims = {"a": 4, "b": 3}
    enc = nn.ModuleDict({m: nn.Linear(d, 5) for m, d in dims.items()})
    head = nn.Linear(10, 3)
    for name in BASELINES:
        v = build_method(name, dims=dims, encoders=enc, embed_dims={m: 5 for m in dims}, fusion_head=head, num_classes=3)
        assert v.name == name and v.rebalancer is not None
        assert set(v.rebalancer.touched()) == set(dims)
    # shared settings: BALM's tau is unused by OGM-GE, the common lr reaches both
    kw = dict(dims=dims, encoders=enc, embed_dims={m: 5 for m in dims}, fusion_head=head, num_classes=3)
    assert build_method("ogm-ge", **kw, shared={"tau": 0.3, "lr": 0.02}).rebalancer.lr == 0.02
    assert build_method("balm", **kw, shared={"alpha": 0.2, "lr": 0.02}).rebalancer.lr == 0.02


def test_registry_refuses_bad_registrations_and_resolves_import_paths():
    with pytest.raises(ValueError, match="already registered"):
        methods.register("balm", rebalancer=GradientRebalancer)
    with pytest.raises(TypeError, match="subclass of balm.core.Rebalancer"):
        methods.register("bogus-method", rebalancer=nn.Linear)
    with pytest.raises(ValueError, match="built in"):
        methods.unregister("ogm-ge")
    assert methods.get("balm.baselines.ogm_ge:OGMGE").options == methods.method_options("ogm-ge")
    with pytest.raises(ValueError, match="cannot be imported"):
        methods.get("balm.nowhere:Thing")
    with pytest.raises(ValueError, match="not a subclass"):
        methods.get("torch.nn:Linear")
