"""The ``optimizer`` key: the update rules on hand-built tensors, the trainer's use of it, config errors."""

import pytest
import torch

from balm.experiments import trainer as trainer_mod
from balm.experiments.config import Config, ConfigError
from balm.experiments.optim import make_optimizer
from balm.experiments.trainer import train
from exp_helpers import base_config


def _cfg(**kw):
    return Config.from_dict({"data": "synthetic:iemocap", **kw})


def _two_steps(cfg, g1, g2, p0):
    p = torch.nn.Parameter(p0.clone())
    opt = make_optimizer(cfg, [p])
    for g in (g1, g2):
        p.grad = g.clone()
        opt.step()
    return p.detach()


P0 = torch.tensor([1.0, -2.0, 0.5])
G1 = torch.tensor([0.3, 0.1, -0.4])
G2 = torch.tensor([-0.2, 0.5, 0.1])


def test_sgd_with_momentum_and_weight_decay_by_hand():
    lr, beta, lam = 0.1, 0.9, 0.01
    got = _two_steps(_cfg(optimizer="sgd", momentum=beta, lr=lr, weight_decay=lam), G1, G2, P0)
    b1 = G1 + lam * P0
    p1 = P0 - lr * b1
    b2 = beta * b1 + G2 + lam * p1
    assert torch.allclose(got, p1 - lr * b2, atol=1e-7)


def test_sgd_without_momentum_is_plain_gradient_descent():
    got = _two_steps(_cfg(optimizer="sgd", lr=0.1, weight_decay=0.0), G1, G2, P0)
    assert torch.allclose(got, P0 - 0.1 * (G1 + G2), atol=1e-7)


def test_adam_l2_against_adamw_decoupled_first_step():
    lr, lam, eps = 0.01, 0.5, 1e-8
    p = torch.nn.Parameter(P0.clone())
    p.grad = G1.clone()
    make_optimizer(_cfg(optimizer="adam", lr=lr, weight_decay=lam), [p]).step()
    g = G1 + lam * P0  # L2 enters the gradient; Adam's first step is lr · g / (|g| + eps)
    assert torch.allclose(p.detach(), P0 - lr * g / (g.abs() + eps), atol=1e-6)
    q = torch.nn.Parameter(P0.clone())
    q.grad = G1.clone()
    make_optimizer(_cfg(optimizer="adamw", lr=lr, weight_decay=lam), [q]).step()
    assert torch.allclose(q.detach(), P0 * (1 - lr * lam) - lr * G1 / (G1.abs() + eps), atol=1e-6)


def test_trainer_steps_backbone_and_fcm_with_plain_sgd(tiny_data, tmp_path, monkeypatch):
    """A BALM run under sgd without momentum: each step of every model parameter is exactly −lr·g."""
    seen = {}

    def recording(cfg, params, lr=None):
        params = list(params)
        opt = make_optimizer(cfg, params, lr=lr)
        seen["opt"], seen["params"], seen["moves"] = opt, params, []
        inner = opt.step

        def step(*a, **kw):
            before = [(p.detach().clone(), None if p.grad is None else p.grad.detach().clone()) for p in params]
            out = inner(*a, **kw)
            seen["moves"].append([(b, g, p.detach().clone()) for (b, g), p in zip(before, params)])
            return out

        opt.step = step
        return opt

    real_build = trainer_mod.build_model

    def capture(*a, **kw):
        seen["model"], seen["rebalancer"] = real_build(*a, **kw)
        return seen["model"], seen["rebalancer"]

    monkeypatch.setattr(trainer_mod, "make_optimizer", recording)
    monkeypatch.setattr(trainer_mod, "build_model", capture)
    lr = 0.05
    cfg = Config.from_dict(base_config(tiny_data, method="balm", optimizer="sgd", lr=lr, weight_decay=0.0,
                                       head_lr=0.002, epochs=1, checkpoint=False, tsne_samples=0))
    train(cfg, tmp_path / "run", quiet=True)
    opt = seen["opt"]
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["momentum"] == 0.0
    assert opt.param_groups[0]["lr"] == lr
    assert len(seen["moves"]) >= 2
    moved = 0
    for step in seen["moves"]:
        for before, grad, after in step:
            expected = before if grad is None else before - lr * grad
            assert torch.allclose(after, expected, rtol=0, atol=1e-7)
            moved += grad is not None and bool(grad.abs().sum() > 0)
    assert moved > 0
    # the optimizer holds exactly backbone + FCM; the rebalancer's unimodal heads are not in it
    model = seen["model"]
    assert model.input_module is not None
    assert [id(p) for p in seen["params"]] == [id(p) for p in model.parameters()]
    heads = {id(p) for p in seen["rebalancer"].parameters()} - {id(p) for p in model.parameters()}
    assert heads and not heads & {id(p) for p in seen["params"]}
    head_opt = seen["rebalancer"].head_optimizer  # the heads' own Adam, at head_lr
    assert type(head_opt) is torch.optim.Adam and head_opt.param_groups[0]["lr"] == 0.002


@pytest.mark.parametrize("data, key, fragment", [
    ({"optimizer": "rmsprop"}, "optimizer", "unknown optimizer 'rmsprop'.*adam, adamw, sgd"),
    ({"optimizer": "sdg"}, "optimizer", "did you mean 'sgd'"),
    ({"optimizer": "adam", "momentum": 0.9}, "momentum", "sgd only"),
    ({"optimizer": "sgd", "momentum": 1.0}, "momentum", r"\[0.0, 1.0\)"),
    ({"optimizer": "sgd", "momentum": "high"}, "momentum", "expected a number"),
])
def test_bad_optimizer_settings_name_the_key(data, key, fragment):
    with pytest.raises(ConfigError, match=rf"key '{key}'.*{fragment}"):
        _cfg(**data)


@pytest.mark.parametrize("plain, fused", [("adam", "adam-fused"), ("adamw", "adamw-fused")])
def test_fused_variants_follow_the_per_tensor_rule(plain, fused):
    """``adam-fused`` is torch's fused kernel (``fused=True``) of the same update: equal to the
    per-tensor rule up to rounding over a few steps, and by hand on the first step."""
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(257, generator=gen)
    grads = [torch.randn(257, generator=gen) for _ in range(6)]
    got = {}
    for name in (plain, fused):
        p = torch.nn.Parameter(p0.clone())
        opt = make_optimizer(_cfg(optimizer=name, lr=0.01, weight_decay=0.1), [p])
        assert bool(opt.defaults.get("fused")) is (name == fused)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        got[name] = p.detach()
    assert not torch.equal(got[plain], p0)
    torch.testing.assert_close(got[fused], got[plain], rtol=0, atol=1e-6)
    # first step by hand: Adam's m̂/√v̂ is g/|g| (L2 in g for adam; decoupled decay for adamw)
    lr, lam, eps = 0.01, 0.1, 1e-8
    p = torch.nn.Parameter(P0.clone())
    p.grad = G1.clone()
    make_optimizer(_cfg(optimizer=fused, lr=lr, weight_decay=lam), [p]).step()
    if fused == "adam-fused":
        g = G1 + lam * P0
        want = P0 - lr * g / (g.abs() + eps)
    else:
        want = P0 * (1 - lr * lam) - lr * G1 / (G1.abs() + eps)
    torch.testing.assert_close(p.detach(), want, rtol=0, atol=1e-6)


def test_fused_adam_trains_deterministically(tiny_data, tmp_path, monkeypatch):
    """A BALM run under ``adam-fused`` uses the fused kernel, and the same seed gives the same metrics."""
    kinds = []
    real = trainer_mod.make_optimizer

    def recording(cfg, params, lr=None):
        opt = real(cfg, params, lr=lr)
        kinds.append((type(opt), opt.defaults.get("fused")))
        return opt

    monkeypatch.setattr(trainer_mod, "make_optimizer", recording)
    cfg = Config.from_dict(base_config(tiny_data, method="balm", optimizer="adam-fused", epochs=2,
                                       checkpoint=False, tsne_samples=0))
    a = train(cfg, tmp_path / "a", quiet=True)
    b = train(cfg, tmp_path / "b", quiet=True)
    assert kinds == [(torch.optim.Adam, True)] * 2
    assert a["test"] == b["test"] and a["dev"] == b["dev"] and a["best_epoch"] == b["best_epoch"]


def test_fused_optimizer_takes_no_momentum():
    with pytest.raises(ConfigError, match="key 'momentum'.*sgd only"):
        _cfg(optimizer="adam-fused", momentum=0.9)
