"""The rebalancer base: update-modulation against gradient-modulation under SGD and Adam, the
smoothed Δ, the floored coefficients and the μ jitter statistic."""

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from balm.core import GradientRebalancer, Rebalancer, RebalancerOptions
from balm.core import functional as BF
from tiny_rebalance import backward, make_setup


@dataclass
class ConstantOptions(RebalancerOptions):
    value: float = 0.5


class Constant(Rebalancer):
    """k^m = value for every modality (a method with a known coefficient)."""

    Options = ConstantOptions
    method = "constant"

    def rebalance_(self, embeddings, fused_output, targets, masks=None):
        self.prepare(embeddings, fused_output, targets, masks)
        coeff = torch.full((len(self.modalities),), self.value)
        self.scale_(coeff)
        self._last = {"coeff": coeff}


def one_step(modulate, opt_factory, value=0.5, seed=0, plain=False):
    """Parameters of the tiny model after one step with the Constant method (or none)."""
    model, rb, x, y, masks = make_setup(Constant, M=3, seed=seed, value=value, modulate=modulate)
    opt = opt_factory(model.parameters())
    for _ in range(2):  # a second step, so Adam's moments and SGD's momentum are non-trivial
        pred, z = backward(model, rb, x, y)
        if plain:
            opt.step()
        else:
            rb.rebalance_(z, pred.detach(), y, masks)
            rb.step(opt)
    return model


def named(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def start(seed=0):
    model, *_ = make_setup(Constant, M=3, seed=seed)
    return named(model)


def sgd(params):
    return torch.optim.SGD(params, lr=0.1)


def adam(params):
    return torch.optim.Adam(params, lr=0.01, weight_decay=1e-3)


def test_sgd_update_and_gradient_modulation_agree():
    a, b = named(one_step("update", sgd)), named(one_step("gradient", sgd))
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-5, atol=1e-7)


def test_adam_update_modulation_scales_the_encoders_step_exactly():
    """One step from the same state: encoders move c × the optimizer's step, the rest identically."""
    c = 0.3
    model, rb, x, y, masks = make_setup(Constant, M=3, value=c, modulate="update")
    twin = copy.deepcopy(model)
    opt, opt_twin = adam(model.parameters()), adam(twin.parameters())
    p0 = named(model)
    pred, z = backward(model, rb, x, y)
    backward(twin, rb, x, y)  # the same gradients on the twin; rb only reads model's
    rb.rebalance_(z, pred.detach(), y, masks)
    rb.step(opt)
    opt_twin.step()
    got, plain = named(model), named(twin)
    for n in got:
        if n.startswith("encoders."):
            want = p0[n] + c * (plain[n] - p0[n])
            torch.testing.assert_close(got[n], want, rtol=0, atol=1e-7)
            assert not torch.equal(got[n], plain[n])
        else:
            assert torch.equal(got[n], plain[n]), n  # every other parameter: bit-identical


def test_adam_cancels_a_constant_gradient_scale():
    """Under Adam (no weight decay), g ← c g leaves the step unchanged up to Adam's eps: the reason
    for modulate='update'."""
    def adam_plain(params):
        return torch.optim.Adam(params, lr=0.01)

    scaled, plain = named(one_step("gradient", adam_plain, value=0.3)), named(one_step("gradient", adam_plain, plain=True))
    moved = 0
    for n in scaled:
        torch.testing.assert_close(scaled[n], plain[n], rtol=1e-4, atol=1e-6)
        moved += int(not torch.equal(plain[n], start()[n]))
    assert moved > 0


def test_update_mode_leaves_gradients_alone_and_step_without_rebalance_is_plain():
    model, rb, x, y, masks = make_setup(Constant, M=2, value=0.0, modulate="update")
    pred, z = backward(model, rb, x, y)
    g = {n: p.grad.clone() for n, p in model.named_parameters()}
    rb.rebalance_(z, pred.detach(), y, masks)
    assert all(torch.equal(p.grad, g[n]) for n, p in model.named_parameters())
    p0 = named(model)
    rb.step(sgd(model.parameters()))  # value 0: the encoders do not move, the rest does
    after = named(model)
    assert all(torch.equal(after[n], p0[n]) for n in p0 if n.startswith("encoders."))
    assert any(not torch.equal(after[n], p0[n]) for n in p0 if not n.startswith("encoders."))
    # a second step() without a new rebalance_ is the optimizer's own step
    backward(model, rb, x, y)
    p1 = named(model)
    rb.step(sgd(model.parameters()))
    assert any(not torch.equal(named(model)[n], p1[n]) for n in p1 if n.startswith("encoders."))


def test_grm_update_mode_scales_each_encoder_step_by_its_mu():
    model, grm, x, y, masks = make_setup(GradientRebalancer, M=3, modulate="update", delta_mode="history")
    twin = copy.deepcopy(model)
    opt, opt_twin = adam(model.parameters()), adam(twin.parameters())
    p0 = named(model)
    pred, z = backward(model, grm, x, y)
    backward(twin, grm, x, y)
    grm.rebalance_(z, pred.detach(), y, masks)
    grm.step(opt)
    opt_twin.step()
    mu = grm.stats["mu"]
    got, plain = named(model), named(twin)
    for n in got:
        if n.startswith("encoders."):
            m = n.split(".")[1]
            torch.testing.assert_close(got[n], p0[n] + mu[m] * (plain[n] - p0[n]), rtol=0, atol=1e-6)
        else:
            assert torch.equal(got[n], plain[n]), n


def test_option_errors_name_the_option():
    with pytest.raises(ValueError, match="modulate must be one of"):
        make_setup(Constant, modulate="step")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['valu'\] for constant; valid: .*'value'"):
        make_setup(Constant, valu=1.0)
    with pytest.raises(ValueError, match="delta_beta must lie in"):
        make_setup(GradientRebalancer, delta_beta=1.0)


# ------------------------------------------------------------------ floored coefficients


@pytest.mark.parametrize("rho", [1.0, 1.4])
def test_floored_rule_with_two_modalities(rho):
    mu, _, _ = BF.coefficients(torch.tensor([0.4, -0.1]), rho, "guarded")
    assert mu.tolist() == [0.0, pytest.approx(rho)]  # the guarded rule stops encoder a
    mu, clamped, fallback = BF.coefficients(torch.tensor([0.4, -0.1]), rho, "floored", floor=0.25)
    assert mu.tolist() == pytest.approx([0.25 * rho, rho]) and bool(clamped) and not bool(fallback)
    mu, *_ = BF.coefficients(torch.tensor([0.4, 0.0]), rho, "floored", floor=0.25)
    assert mu.tolist() == pytest.approx([0.25 * rho, rho])
    # every Δ > 0: the paper's formula, bit for bit
    for d in ([0.4, 1e-6], [0.3, 0.7], [2.0, 1.0]):
        delta = torch.tensor(d)
        paper = rho * (delta.sum() - delta) / delta.sum()
        got, *_ = BF.coefficients(delta, rho, "floored", floor=0.25)
        assert torch.equal(got, paper)
    # no progress at all: the uniform fallback, finite
    mu, _, fallback = BF.coefficients(torch.tensor([-0.2, -0.1]), rho, "floored")
    assert bool(fallback) and mu.tolist() == pytest.approx([rho / 2, rho / 2])


def test_floored_rule_never_stops_an_encoder_while_another_progresses():
    g = torch.Generator().manual_seed(0)
    for _ in range(500):
        delta = torch.randn(2, generator=g) * torch.rand(1, generator=g) * 3
        mu, _, fallback = BF.coefficients(delta, 1.3, "floored", floor=0.2)
        assert torch.isfinite(mu).all()
        if (delta > 0).any():
            assert (mu > 0).all()


# ------------------------------------------------------------------ smoothed Δ


def test_ema_delta_by_hand():
    beta = 0.5
    kls = [torch.tensor([1.0, 2.0]), torch.tensor([0.8, 2.1]), torch.tensor([0.5, 2.1])]
    present = [torch.tensor([True, True]), torch.tensor([True, True]), torch.tensor([True, False])]
    state, out = None, []
    for kl, p in zip(kls, present):
        delta, scale, state = BF.ema_delta(kl, p, state, beta)
        out.append((delta.tolist(), float(scale)))
    assert out[0] == ([0.0, 0.0], 3.0)  # no decrease seen yet
    # step 2: raw decreases (0.2, -0.1); a = 0.5·0 + 0.5·raw, corrected by 1/(1 − 0.5)
    assert out[1][0] == pytest.approx([0.2, -0.1]) and out[1][1] == pytest.approx(2.9)
    # step 3: modality 0 decreases by 0.3: a = 0.5·0.1 + 0.5·0.3 = 0.2, /(1 − 0.25); modality 1 absent: kept
    assert out[2][0] == pytest.approx([0.2 / 0.75, -0.1]) and out[2][1] == pytest.approx(0.5 + 2.1)
    # β = 0 is the paper's cross-iteration Δ
    d, _, _ = BF.ema_delta(kls[1], present[1], BF.ema_delta(kls[0], present[0], None, 0.0)[2], 0.0)
    assert d.tolist() == pytest.approx([0.2, -0.1])


def test_grm_records_mu_jitter_and_ema_smooths_it():
    def run(mode):
        model, grm, x, y, masks = make_setup(GradientRebalancer, M=3, N=32, delta_mode=mode, coefficients="floored")
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        mus = []
        for step in range(30):
            xs = {m: v + 0.3 * torch.randn_like(v) for m, v in x.items()}
            pred, z = backward(model, grm, xs, y)
            grm.rebalance_(z, pred.detach(), y, masks)
            grm.step(opt)
            mus.append([grm.stats["mu"][m] for m in grm.modalities])
        return np.array(mus), grm.stats["mu_std"]

    raw, raw_std = run("history")
    smooth, smooth_std = run("ema")
    np.testing.assert_allclose([raw_std[m] for m in ("audio", "text", "visual")], raw.std(axis=0), rtol=1e-5)
    # smoothing: μ moves less from one step to the next
    assert np.abs(np.diff(smooth[5:], axis=0)).mean() < np.abs(np.diff(raw[5:], axis=0)).mean()


# ------------------------------------------------------------------ resuming


@pytest.mark.parametrize("method", ["balm", "cggm", "ogm-ge"])
def test_state_dict_resumes_a_rebalancer_exactly(method):
    from balm.methods import get

    cls = {"balm": GradientRebalancer}.get(method)
    if cls is None:
        from balm.baselines import CGGM, OGMGE

        cls = {"cggm": CGGM, "ogm-ge": OGMGE}[method]
    kw = {"delta_mode": "ema"} if method == "balm" else ({"noise": False} if method == "ogm-ge" else {})

    def steps(model, rb, opt, x, y, masks, n):
        out = []
        for _ in range(n):
            pred, z = backward(model, rb, x, y)
            rb.rebalance_(z, pred.detach(), y, masks)
            rb.step(opt)
            out.append(rb.stats)
        return out

    model, rb, x, y, masks = make_setup(cls, M=3, **kw)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    steps(model, rb, opt, x, y, masks, 3)
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(rb.state_dict()), copy.deepcopy(opt.state_dict()))
    reference = steps(model, rb, opt, x, y, masks, 3)

    model2, rb2, *_ = make_setup(cls, M=3, seed=1, **kw)  # other initial weights: everything comes from the state
    model2.load_state_dict(saved[0])
    rb2.load_state_dict(saved[1])
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    opt2.load_state_dict(saved[2])
    assert steps(model2, rb2, opt2, x, y, masks, 3) == reference
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert get(method).name == method
