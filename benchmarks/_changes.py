"""Speed changes timed side by side by ``bench_backbones.py --compare NAME`` (docs/runtime.md).

Each change is two ways of running the same ``train()``: ``a`` and ``b``, each a context manager
that swaps the code path in (``contextlib.nullcontext`` = the library as it is). For a change the
library has taken, ``a`` restores the code it replaced, so the before/after ratio can be measured
again on any machine; for a candidate that was measured and not taken, ``b`` swaps it in.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from _harness import swapped


@dataclass(frozen=True)
class Change:
    about: str
    a: str
    b: str
    way_a: Callable
    way_b: Callable
    config: str = "configs/iemocap/mmgcn.yaml"
    taken: bool = False


def _two_pass_dev():
    """The dev evaluation before: predictions, then a second forward pass for the heads' accuracy."""
    from balm.experiments import diagnostics as DG
    from balm.experiments.evaluation import evaluate_split

    def two_pass(model, rebalancer, split, meta, batch_size, device):
        dev = evaluate_split(model, split, meta, batch_size, device)
        return dev, DG.head_accuracy(model, rebalancer, split, meta, batch_size, device)

    return swapped({DG: {"evaluate_with_heads": two_pass}})


def _checkpoint_ratio(ratio: float):
    """The resume checkpoint written whenever ``ratio`` times its last cost has passed."""
    from balm.experiments import trainer

    return swapped({trainer: {"CHECKPOINT_RATIO": ratio}})


def _where_calibrate():
    """FCM's x̂ = e · g ⊙ x written with torch.where, as before."""
    from balm.core import functional as BF

    def calibrate(x, gate, mask):
        return torch.where(mask.unsqueeze(-1), gate.unsqueeze(1) * x, x.new_zeros(()))

    return swapped({BF: {"calibrate": calibrate}})


def _adam(**options):
    """torch.optim.Adam (the trainer's and the heads' optimizer) with ``options`` added."""

    @contextlib.contextmanager
    def way():
        original = torch.optim.Adam

        class Adam(original):
            def __init__(self, params, **kw):
                super().__init__(params, **{**kw, **options})

        torch.optim.Adam = Adam
        try:
            yield
        finally:
            torch.optim.Adam = original

    return way


def _split_direction_gru():
    """MM-DFN's bidirectional GRUs run as two single-direction passes over padded batches (the
    backward one on each dialogue reversed within its length), with the same nn.GRU parameters,
    instead of one packed-sequence call."""
    from balm.backbones import mmdfn
    from balm.backbones.graph import dropout

    def split_run(rnn, x, lengths):
        B, T, _ = x.shape
        steps = torch.arange(T, device=x.device)[None, :]
        L = lengths.to(x.device)[:, None]
        rev = torch.where(steps < L, L - 1 - steps, steps)[..., None]
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        out = x
        for layer in range(rnn.num_layers):
            if layer > 0:
                out = dropout(out, rnn.dropout, rnn.training)
            h0 = out.new_zeros(1, B, rnn.hidden_size)
            fwd = [getattr(rnn, f"{n}_l{layer}") for n in names]
            bwd = [getattr(rnn, f"{n}_l{layer}_reverse") for n in names]
            f = torch._VF.gru(out, h0, fwd, True, 1, 0.0, rnn.training, False, True)[0]
            r = torch._VF.gru(out.gather(1, rev.expand(-1, -1, out.shape[-1])), h0, bwd, True, 1, 0.0,
                              rnn.training, False, True)[0]
            out = torch.cat([f, r.gather(1, rev.expand(-1, -1, r.shape[-1]))], dim=-1)
        return out * (steps < L)[..., None].to(out.dtype)

    def by_speaker(rnn, x, groups):
        return groups.scatter(split_run(rnn, groups.gather(x), groups.lengths), x.shape[1])

    return swapped({mmdfn: {"run_packed": split_run, "run_by_speaker": by_speaker}})


def _optimizer(name: str):
    """The trainer's optimizer chosen as config ``optimizer: name`` (the heads keep theirs)."""
    import dataclasses

    from balm.experiments import optim, trainer

    def make(cfg, params, lr=None):
        return optim.make_optimizer(dataclasses.replace(cfg, optimizer=name), params, lr=lr)

    return swapped({trainer: {"make_optimizer": make}})


@contextlib.contextmanager
def _all_before():
    """Every taken change undone at once: the code as it was before them."""
    with _two_pass_dev(), _where_calibrate(), _checkpoint_ratio(10.0):
        yield


CHANGES = {
    "all-taken": Change(
        "every taken change below together (eval-one-pass, fcm-masked-fill, checkpoint-ratio)",
        "before", "after", _all_before, contextlib.nullcontext, taken=True),
    "eval-one-pass": Change(
        "dev predictions and the unimodal heads' dev accuracy from one forward pass per epoch",
        "two passes", "one pass", _two_pass_dev, contextlib.nullcontext, taken=True),
    "checkpoint-ratio": Change(
        "the resume checkpoint (last.pt, 91 MB for MMGCN+BALM) written when 40x its last cost has passed, not 10x",
        "ratio 10", "ratio 40", lambda: _checkpoint_ratio(10.0), contextlib.nullcontext, taken=True),
    "fcm-masked-fill": Change(
        "FCM's calibrated input with masked_fill_ on the product instead of torch.where (same values)",
        "where", "masked_fill", _where_calibrate, contextlib.nullcontext, taken=True),
    "adam-foreach": Change(
        "Adam with foreach=True (multi-tensor ops; identical results)",
        "per-tensor", "foreach", contextlib.nullcontext, _adam(foreach=True)),
    "adam-fused": Change(
        "Adam with fused=True (one fused kernel; results differ by rounding)",
        "per-tensor", "fused", contextlib.nullcontext, _adam(fused=True)),
    "optimizer-adam-fused": Change(
        "the opt-in config value optimizer: adam-fused (torch's fused Adam for backbone and FCM; the heads "
        "keep per-tensor Adam; results differ by rounding)",
        "adam", "adam-fused", contextlib.nullcontext, lambda: _optimizer("adam-fused")),
    "mmdfn-split-gru": Change(
        "MM-DFN's bidirectional GRUs as two single-direction passes (results differ: dropout draws, rounding)",
        "packed", "split", contextlib.nullcontext, _split_direction_gru, config="configs/iemocap/mmdfn.yaml"),
}
