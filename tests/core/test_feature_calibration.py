import math

import pytest
import torch

from balm.core import FeatureCalibration


def reference_fcm(fcm, features, masks, valid):
    """Independent loop implementation of FCM (docs/method.md §2)."""
    mods = list(fcm.dims)
    B, T = valid.shape
    Wg, bg = fcm.squeeze.weight.detach(), fcm.squeeze.bias.detach()
    Wc, bc = fcm.gates.weight.detach(), fcm.gates.bias.detach()
    out = {m: torch.zeros_like(features[m]) for m in mods}
    for b in range(B):
        s = []
        for m in mods:
            acc = torch.zeros(fcm.dims[m], dtype=features[m].dtype)
            n = 0
            for t in range(T):
                if valid[b, t] and masks[m][b, t]:
                    acc = acc + features[m][b, t]
                    n += 1
            s.append(acc / (n + 1e-8))
        z = torch.relu(Wg @ torch.cat(s) + bg)
        gate = 2.0 / (1.0 + torch.exp(-(Wc @ z + bc)))
        off = 0
        for m in mods:
            g = gate[off : off + fcm.dims[m]]
            off += fcm.dims[m]
            for t in range(T):
                if valid[b, t] and masks[m][b, t]:
                    out[m][b, t] = g * features[m][b, t]
    return out


def make_inputs(dims, B=3, T=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    valid = torch.tensor([[True] * T, [True] * (T - 1) + [False], [True] * 2 + [False] * (T - 2)])[:B]
    masks = {m: (torch.rand(B, T, generator=g) > 0.35) & valid for m in dims}
    feats = {m: torch.randn(B, T, d, generator=g) * masks[m][..., None] for m, d in dims.items()}
    return feats, masks, valid


def test_default_d_global_matches_paper_table():
    assert FeatureCalibration({"text": 1024, "audio": 1582, "visual": 342}).d_global == 737
    assert FeatureCalibration({"audio": 512, "text": 1024, "visual": 1024}).d_global == 640
    assert FeatureCalibration({"a": 3, "b": 5}, d_global=7).d_global == 7


def test_matches_independent_implementation():
    torch.manual_seed(0)
    dims = {"a": 3, "b": 2, "c": 4}
    fcm = FeatureCalibration(dims, d_global=5)
    feats, masks, valid = make_inputs(dims)
    out = fcm(feats, masks, valid)
    ref = reference_fcm(fcm, feats, masks, valid)
    for m in dims:
        assert torch.allclose(out[m], ref[m], atol=1e-6)


def test_masked_mean_ignores_padding_and_missing_steps():
    torch.manual_seed(1)
    dims = {"a": 3, "b": 2}
    fcm = FeatureCalibration(dims, d_global=4)
    feats, masks, valid = make_inputs(dims, seed=3)
    out = fcm(feats, masks, valid)
    gates = {m: g.clone() for m, g in fcm.last_gates.items()}
    junk = {m: torch.where((masks[m] & valid)[..., None], feats[m], torch.full_like(feats[m], 1e6)) for m in dims}
    out_junk = fcm(junk, masks, valid)
    for m in dims:
        assert torch.equal(fcm.last_gates[m], gates[m])
        assert torch.equal(out_junk[m], out[m])


def test_missing_and_padding_exactly_zero():
    torch.manual_seed(2)
    dims = {"a": 3, "b": 2}
    fcm = FeatureCalibration(dims)
    feats, masks, valid = make_inputs(dims, seed=4)
    feats = {m: torch.randn_like(x) + 5 for m, x in feats.items()}  # non-zero everywhere
    out = fcm(feats, masks, valid)
    for m in dims:
        off = ~(masks[m] & valid)
        assert off.any()
        assert torch.equal(out[m][off], torch.zeros_like(out[m][off]))
        assert (out[m][~off] != 0).all()


def test_gate_is_two_sigmoid_of_bias_when_weights_zero():
    dims = {"a": 2, "b": 3}
    fcm = FeatureCalibration(dims, d_global=2)
    with torch.no_grad():
        fcm.gates.weight.zero_()
        fcm.gates.bias.copy_(torch.tensor([-1.0, 0.0, 0.5, 2.0, -3.0]))
    x = {"a": torch.ones(1, 2), "b": torch.ones(1, 3)}
    out = fcm(x, {"a": torch.tensor([True]), "b": torch.tensor([True])})
    want = [2 / (1 + math.exp(1.0)), 1.0, 2 / (1 + math.exp(-0.5)), 2 / (1 + math.exp(-2.0)), 2 / (1 + math.exp(3.0))]
    assert torch.cat([out["a"][0], out["b"][0]]).tolist() == pytest.approx(want, rel=1e-6)
    assert fcm.last_gates["b"].shape == (1, 3) and not fcm.last_gates["b"].requires_grad


def test_plain_vectors_equal_length_one_sequences():
    torch.manual_seed(3)
    dims = {"a": 3, "b": 2}
    fcm = FeatureCalibration(dims, d_global=3)
    x = {m: torch.randn(5, d) for m, d in dims.items()}
    e = {"a": torch.tensor([True, False, True, True, False]), "b": torch.tensor([True, True, False, True, True])}
    flat = fcm(x, e)
    seq = fcm({m: v[:, None] for m, v in x.items()}, {m: v[:, None] for m, v in e.items()}, torch.ones(5, 1, dtype=torch.bool))
    for m in dims:
        assert torch.equal(flat[m], seq[m][:, 0])
        assert torch.equal(flat[m][~e[m]], torch.zeros_like(flat[m][~e[m]]))


def test_no_masks_means_present_where_valid():
    torch.manual_seed(4)
    dims = {"a": 2, "b": 2}
    fcm = FeatureCalibration(dims, d_global=2)
    x = {m: torch.randn(2, 3, 2) for m in dims}
    valid = torch.tensor([[True, True, False], [True, True, True]])
    a = fcm(x, None, valid)
    b = fcm(x, {m: valid for m in dims}, valid)
    for m in dims:
        assert torch.equal(a[m], b[m])


def test_gradcheck_module_float64():
    torch.manual_seed(5)
    dims = {"a": 2, "b": 3}
    fcm = FeatureCalibration(dims, d_global=3).double()
    feats, masks, valid = make_inputs(dims, B=2, T=3, seed=6)
    xa = feats["a"].double().requires_grad_()
    xb = feats["b"].double().requires_grad_()

    def f(xa, xb):
        out = fcm({"a": xa, "b": xb}, masks, valid)
        return out["a"], out["b"]

    assert torch.autograd.gradcheck(f, (xa, xb))
    params = {k: v.detach().clone().requires_grad_() for k, v in fcm.named_parameters()}
    names = list(params)

    def g(*ps):
        out = torch.func.functional_call(fcm, dict(zip(names, ps)), ({"a": xa.detach(), "b": xb.detach()}, masks, valid))
        return out["a"], out["b"]

    assert torch.autograd.gradcheck(g, tuple(params.values()))


def test_bad_input_errors():
    fcm = FeatureCalibration({"a": 2, "b": 3})
    with pytest.raises(ValueError, match="exactly the modalities"):
        fcm({"a": torch.zeros(1, 2)})
    with pytest.raises(ValueError, match=r"features\['b'\]"):
        fcm({"a": torch.zeros(1, 2), "b": torch.zeros(1, 4)})
    with pytest.raises(ValueError, match=r"masks\['a'\]"):
        fcm({"a": torch.zeros(2, 2), "b": torch.zeros(2, 3)}, {"a": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="positive int"):
        FeatureCalibration({"a": 0, "b": 3})


def test_flat_modality_next_to_sequences():
    """A (B, d) modality beside (B, T, d) sequences is one vector per sequence: its summary is the
    vector itself (zero when missing), and every gate comes from the same z_b (loop written here)."""
    torch.manual_seed(0)
    dims = {"a": 3, "clip": 2, "c": 4}
    fcm = FeatureCalibration(dims, d_global=5)
    feats, masks, valid = make_inputs({"a": 3, "c": 4}, seed=1)
    B = valid.shape[0]
    clip_mask = torch.tensor([True, False, True])
    clip = torch.randn(B, 2) * clip_mask[:, None]
    out = fcm({**feats, "clip": clip}, {**masks, "clip": clip_mask}, valid)
    assert out["clip"].shape == (B, 2) and out["a"].shape == feats["a"].shape

    Wg, bg = fcm.squeeze.weight.detach(), fcm.squeeze.bias.detach()
    Wc, bc = fcm.gates.weight.detach(), fcm.gates.bias.detach()
    for b in range(B):
        s = []
        for m in dims:
            if m == "clip":
                s.append(clip[b] if clip_mask[b] else torch.zeros(2))
                continue
            keep = [t for t in range(valid.shape[1]) if valid[b, t] and masks[m][b, t]]
            s.append(sum((feats[m][b, t] for t in keep), torch.zeros(dims[m])) / (len(keep) + 1e-8))
        gate = 2.0 * torch.sigmoid(Wc @ torch.relu(Wg @ torch.cat(s) + bg) + bc)
        g = dict(zip(dims, gate.split(list(dims.values()))))
        want_clip = g["clip"] * clip[b] if clip_mask[b] else torch.zeros(2)
        assert torch.allclose(out["clip"][b], want_clip, atol=1e-6)
        for m in ("a", "c"):
            for t in range(valid.shape[1]):
                want = g[m] * feats[m][b, t] if (valid[b, t] and masks[m][b, t]) else torch.zeros(dims[m])
                assert torch.allclose(out[m][b, t], want, atol=1e-6)
    # a flat modality must still match the batch size of the sequences
    with pytest.raises(ValueError, match=r"features\['clip'\] must have shape \(3, 2\)"):
        fcm({**feats, "clip": torch.zeros(2, 2)}, masks, valid)


def test_ada2i_still_takes_one_layout_and_says_how_to_combine():
    from balm.baselines.ada2i import AdaptiveFeatureWeighting

    afw = AdaptiveFeatureWeighting({"a": 3, "b": 2})
    with pytest.raises(ValueError, match="pool a token sequence to"):
        afw({"a": torch.zeros(2, 4, 3), "b": torch.zeros(2, 2)})
