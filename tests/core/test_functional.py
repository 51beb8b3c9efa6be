import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import entropy

from balm.core import functional as BF


def test_masked_mean_hand_computed_and_ignores_masked_junk():
    x = torch.tensor([[[1.0, 2.0], [100.0, -100.0], [3.0, 6.0]], [[5.0, 5.0], [float("nan"), float("inf")], [0.0, 0.0]]])
    mask = torch.tensor([[True, False, True], [True, False, False]])
    got = BF.masked_mean(x, mask)
    want = torch.tensor([[4.0 / (2 + 1e-8), 8.0 / (2 + 1e-8)], [5.0 / (1 + 1e-8), 5.0 / (1 + 1e-8)]])
    assert torch.allclose(got, want, rtol=0, atol=1e-6)
    # nothing present: 0 / (0 + eps) = 0
    assert torch.equal(BF.masked_mean(torch.ones(1, 2, 3), torch.zeros(1, 2, dtype=torch.bool)), torch.zeros(1, 3))


def test_calibration_gate_is_two_sigmoid():
    logits = torch.tensor([-3.0, -0.5, 0.0, 0.7, 4.0])
    want = torch.tensor([2.0 / (1.0 + math.exp(-v)) for v in logits.tolist()])
    assert torch.allclose(BF.calibration_gate(logits), want, atol=1e-7)
    assert BF.calibration_gate(torch.zeros(1)).item() == 1.0


def test_calibrate_exactly_zero_where_masked():
    x = torch.tensor([[[1.0, -2.0], [float("nan"), 3.0]]])
    gate = torch.tensor([[0.5, 1.5]])
    mask = torch.tensor([[True, False]])
    out = BF.calibrate(x, gate, mask)
    assert torch.equal(out, torch.tensor([[[0.5, -3.0], [0.0, 0.0]]]))


def test_log_distribution_regression_two_class_view():
    s = torch.tensor([-2.0, 0.0, 1.5])
    p = BF.log_distribution(s, "regression").exp()
    want = torch.stack([torch.sigmoid(-s), torch.sigmoid(s)], dim=-1)
    assert torch.allclose(p, want, atol=1e-7)
    assert torch.allclose(BF.log_distribution(s[:, None], "regression"), BF.log_distribution(s, "regression"))
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.allclose(BF.log_distribution(logits, "classification").exp(), torch.softmax(logits, -1))
    with pytest.raises(ValueError, match="task"):
        BF.log_distribution(s, "ranking")


def test_kl_to_fused_hand_value_and_scipy():
    p = torch.tensor([[0.5, 0.5]])
    q = torch.tensor([[0.25, 0.75]])
    kl, count = BF.kl_to_fused(p.log(), q.log())
    assert kl.item() == pytest.approx(0.5 * math.log(2.0) + 0.5 * math.log(0.5 / 0.75), rel=1e-6)
    assert count.item() == 1
    g = torch.Generator().manual_seed(0)
    fused = torch.randn(7, 4, generator=g).log_softmax(-1)
    heads = torch.randn(3, 7, 4, generator=g).log_softmax(-1)
    kl, _ = BF.kl_to_fused(fused, heads)
    for m in range(3):
        want = sum(entropy(fused[i].exp().numpy(), heads[m, i].exp().numpy()) for i in range(7)) / 7
        assert kl[m].item() == pytest.approx(want, rel=1e-5)
        # torch's batchmean KL(target ‖ input) = KL(ŷ ‖ ŷ^m)
        ref = F.kl_div(heads[m], fused, reduction="batchmean", log_target=True)
        assert kl[m].item() == pytest.approx(ref.item(), rel=1e-5)


def test_kl_mask_equals_subset_computation_and_empty_is_zero():
    g = torch.Generator().manual_seed(1)
    fused = torch.randn(6, 3, generator=g).log_softmax(-1)
    heads = torch.randn(2, 6, 3, generator=g).log_softmax(-1)
    mask = torch.tensor([[True, False, True, True, False, False], [False] * 6])
    kl, count = BF.kl_to_fused(fused, heads, mask)
    sub = mask[0]
    want, _ = BF.kl_to_fused(fused[sub], heads[0, sub])
    assert kl[0].item() == pytest.approx(want.item(), rel=1e-6)
    assert count.tolist() == [3.0, 0.0]
    assert kl[1].item() == 0.0


def test_mse_to_fused_matches_torch_mse():
    g = torch.Generator().manual_seed(2)
    fused = torch.randn(5, 4, generator=g).log_softmax(-1)
    heads = torch.randn(2, 5, 4, generator=g).log_softmax(-1)
    mse, _ = BF.mse_to_fused(fused, heads)
    for m in range(2):
        assert mse[m].item() == pytest.approx(F.mse_loss(heads[m].exp(), fused.exp()).item(), rel=1e-6)


def test_deltas_first_step_is_kl():
    prev = torch.tensor([0.5, 0.4, 0.0])
    cur = torch.tensor([0.3, 0.6, 0.2])
    has = torch.tensor([True, True, False])
    assert torch.allclose(BF.deltas(prev, cur, has), torch.tensor([0.2, -0.2, 0.2]))
    assert torch.equal(BF.deltas(prev, cur, False), cur)


def paper_mu(delta, rho):
    total = sum(delta)
    return [rho * (total - d) / total for d in delta]


@pytest.mark.parametrize("mode", ["guarded", "raw"])
def test_coefficients_equal_paper_formula_when_all_progress(mode):
    delta = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    mu, clamped, fallback = BF.coefficients(delta, 1.2, mode)
    want = [1.2 * 5 / 6, 1.2 * 4 / 6, 1.2 * 3 / 6] if mode == "guarded" else [1.2 * 5 / (6 + 1e-8), 1.2 * 4 / (6 + 1e-8), 1.2 * 3 / (6 + 1e-8)]
    assert mu.tolist() == pytest.approx(want, rel=1e-12)
    assert not clamped and not fallback
    # M = 2 and M = 4
    mu2, _, _ = BF.coefficients(torch.tensor([0.1, 0.3], dtype=torch.float64), 1.5, "guarded")
    assert mu2.tolist() == pytest.approx([1.5 * 0.75, 1.5 * 0.25])
    d4 = [0.1, 0.2, 0.3, 0.4]
    mu4, _, _ = BF.coefficients(torch.tensor(d4, dtype=torch.float64), 1.1, "guarded")
    assert mu4.tolist() == pytest.approx(paper_mu(d4, 1.1))


def test_coefficients_zero_sum():
    rho = 1.2
    # all zero: no progress anywhere -> uniform ρ(M−1)/M
    mu, clamped, fallback = BF.coefficients(torch.zeros(3), rho)
    assert mu.tolist() == pytest.approx([0.8, 0.8, 0.8]) and bool(fallback) and not bool(clamped)
    # ΣΔ = 0 with opposite signs: Δ⁺ = (1, 0, 0) -> ρ(0, 1, 1)
    delta = torch.tensor([1.0, -1.0, 0.0])
    mu, clamped, fallback = BF.coefficients(delta, rho)
    assert mu.tolist() == pytest.approx([0.0, rho, rho]) and bool(clamped) and not bool(fallback)
    # raw reproduces the public formula: ρ(ΣΔ − Δ)/(ΣΔ + 1e-8) = ρ·(−Δ)/1e-8
    raw, _, _ = BF.coefficients(delta.double(), rho, "raw")
    assert raw.tolist() == pytest.approx([rho * -1.0 / 1e-8, rho * 1.0 / 1e-8, 0.0], rel=1e-9)


def test_coefficients_negative_sum_and_mixed_signs():
    rho = 1.2
    mu, clamped, fallback = BF.coefficients(torch.tensor([-1.0, -2.0, -0.5]), rho)
    assert mu.tolist() == pytest.approx([0.8] * 3) and bool(fallback)
    delta = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
    mu, clamped, fallback = BF.coefficients(delta, rho)
    assert mu.tolist() == pytest.approx([rho * 0.2 / 0.7, rho * 0.7 / 0.7, rho * 0.5 / 0.7])
    assert bool(clamped) and not bool(fallback)
    assert (mu >= 0).all() and torch.isfinite(mu).all()
    raw, _, _ = BF.coefficients(delta, rho, "raw")
    total = -0.3
    assert raw.tolist() == pytest.approx([rho * (total - d) / (total + 1e-8) for d in delta.tolist()], rel=1e-9)
    assert (raw < 0).any()  # the public formula flips signs here


def test_coefficients_threshold_is_scale_aware():
    delta = torch.tensor([1e-6, 1e-6], dtype=torch.float64)
    # ΣΔ⁺ = 2e-6 against eps·scale
    mu, _, fallback = BF.coefficients(delta, 1.2, eps=1e-5, scale=0.1)  # 2e-6 > 1e-6: formula
    assert not bool(fallback) and mu.tolist() == pytest.approx([0.6, 0.6])
    delta = torch.tensor([1e-6, 3e-6], dtype=torch.float64)
    mu, _, fallback = BF.coefficients(delta, 1.2, eps=1e-5, scale=1.0)  # 4e-6 <= 1e-5: fallback
    assert bool(fallback) and mu.tolist() == pytest.approx([0.6, 0.6])
    mu, _, fallback = BF.coefficients(delta, 1.2, eps=1e-5, scale=0.1)
    assert not bool(fallback) and mu.tolist() == pytest.approx([1.2 * 0.75, 1.2 * 0.25])
    with pytest.raises(ValueError, match="mode"):
        BF.coefficients(delta, 1.2, "clipped")


def test_cosine_and_spatial_pairing():
    w = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    heads = torch.stack([w, -2 * w, torch.tensor([[2.0, -1.0], [1.0, 3.0]])])
    cos = BF.cosine_to_fused(heads, w)
    assert cos.tolist() == pytest.approx([1.0, -1.0, 0.0], abs=1e-6)
    mu_bar = torch.tensor([1.0, 0.25, 2.0])
    c = torch.tensor([0.5, -0.8, 0.1])
    assert BF.spatial_loss(mu_bar, c).item() == pytest.approx((0.5 + 0.2 + 0.2) / 3)
    with pytest.raises(ValueError, match="pair"):
        BF.spatial_loss(mu_bar[:2], c)


def test_gradcheck_functional_pieces_float64():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    assert torch.autograd.gradcheck(lambda x: BF.masked_mean(x, mask), (x,))
    gate = torch.rand(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, g: BF.calibrate(x, g, mask), (x, gate))
    logits = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(BF.calibration_gate, (logits,))
    a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    kl = lambda a, b: BF.kl_to_fused(a.log_softmax(-1), b.log_softmax(-1))[0]  # noqa: E731
    assert torch.autograd.gradcheck(kl, (a, b))
    s = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: BF.log_distribution(s, "regression"), (s,))
    heads = torch.randn(3, 2, 5, dtype=torch.float64)
    wp = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    mu_bar = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda w: BF.spatial_loss(mu_bar, BF.cosine_to_fused(heads, w)), (wp,))
