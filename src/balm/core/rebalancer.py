"""The base every balancing method subclasses: what it holds, checks, reports and scales.

A rebalancer is given a backbone's encoders (one module per modality, the φ^m whose learning it
modulates), their output widths and the fusion head ``F_pred``; per step it computes one
coefficient ``k^m`` per modality and applies it to encoder m, either to its gradients
(``modulate="gradient"``: ``g ← k^m g`` before the optimizer step, Eq. 22) or to its parameter
update (``modulate="update"``: ``θ ← θ_{t−1} + k^m (θ_t − θ_{t−1})`` around the optimizer's step,
the form of Eq. 34, which survives adaptive optimizers such as Adam). The loop a runner writes
for every method::

    loss = task_loss + rebalancer.alignment_loss()
    optimizer.zero_grad(); loss.backward()
    rebalancer.rebalance_(embeddings, prediction.detach(), targets, masks)
    clip_grad_norm_(...)
    rebalancer.step(optimizer)          # optimizer.step(), plus the update scaling if any

A method subclasses :class:`Rebalancer`, declares its options as a dataclass subclassing
:class:`RebalancerOptions` (``Options``), builds its heads in :meth:`Rebalancer.setup` and
implements :meth:`Rebalancer.rebalance_` (usually
:meth:`~Rebalancer.prepare`, a head step, the coefficients, then :meth:`~Rebalancer.scale_`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from . import functional as BF
from .contract import check_contract, encoder_parameters

MODULATE = ("gradient", "update")
NOISE_REFERENCES = ("before", "after", None)


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def _one_of(name: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


@dataclass
class RebalancerOptions:
    """Options every rebalancer takes.

    ``lr`` / ``weight_decay``: Adam of the method's own unimodal heads (if any). The modulation
    window is ``[start_epoch, end_epoch)`` (see :meth:`Rebalancer.set_epoch`). ``missing_aware``:
    heads and per-modality statistics use only the samples where the modality is present.
    ``track_stats``: record cosines and gradient norms for the logs. ``modulate``: what the
    coefficient scales, ``"gradient"`` or ``"update"`` (module docstring).
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    start_epoch: int = 0
    end_epoch: int | None = None
    missing_aware: bool = True
    track_stats: bool = True
    modulate: str = "gradient"

    def __post_init__(self) -> None:
        self.lr = _positive("lr", self.lr)
        self.weight_decay = _non_negative("weight_decay", self.weight_decay)
        if isinstance(self.start_epoch, bool) or not isinstance(self.start_epoch, int) or self.start_epoch < 0:
            raise ValueError(f"start_epoch must be an int >= 0, got {self.start_epoch!r}")
        if self.end_epoch is not None and (
            isinstance(self.end_epoch, bool) or not isinstance(self.end_epoch, int) or self.end_epoch <= self.start_epoch
        ):
            raise ValueError(f"end_epoch ({self.end_epoch!r}) must be an int greater than start_epoch ({self.start_epoch})")
        self.missing_aware, self.track_stats = bool(self.missing_aware), bool(self.track_stats)
        _one_of("modulate", self.modulate, MODULATE)



def option_names(cls: type) -> tuple[str, ...]:
    """The option names an options dataclass accepts (its fields, in order)."""
    return tuple(f.name for f in fields(cls))


def build_options(cls: type[RebalancerOptions], options: Mapping[str, Any], who: str) -> RebalancerOptions:
    """``cls(**options)``, with an unknown name reported as a ``TypeError`` listing the valid ones."""
    valid = option_names(cls)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for {who}; valid: {sorted(valid)}")
    return cls(**options)


def mlp_heads(embed_dims: Mapping[str, int], hidden: int, out: int, like: Tensor) -> nn.ModuleDict:
    """One head ``Linear(d_z^m, hidden) → ReLU → Linear(hidden, out)`` per modality, on ``like``'s
    device and dtype (GRM's Eq. 17 and CGGM's classifiers)."""
    return nn.ModuleDict(
        {m: nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, out)) for m, d in embed_dims.items()}
    ).to(device=like.device, dtype=like.dtype)


class Rebalancer(nn.Module):
    """Shared machinery of every balancing method (not a method by itself).

    Holds references to the backbone's encoders and fusion head (not registered as sub-modules:
    the backbone owns them), the options (``self.options``; each field is also an attribute), the
    modulation window, the per-modality statistics of the last step, and the scaling of encoder
    m's gradients or update by its coefficient, optionally with Gaussian noise of the gradient's
    standard deviation (``noise="before"``: std of the unscaled gradient, as in OGM-GE;
    ``"after"``: std of the scaled gradient, as in Ada2I's code).
    """

    Options: ClassVar[type[RebalancerOptions]] = RebalancerOptions
    method: ClassVar[str] = "rebalancer"
    # attributes holding the method's running state (histories, counters), saved in state_dict()
    state_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        embed_dims: Mapping[str, int],
        fusion_head: nn.Linear,
        *,
        task: str = "classification",
        num_classes: int | None = None,
        **options: Any,
    ):
        super().__init__()
        encoders = dict(encoders.items())
        embed_dims = dict(embed_dims.items())
        self.out_features = check_contract(encoders, embed_dims, fusion_head, task, num_classes, self.method)
        self.options = build_options(self.Options, options, self.method)
        for name, value in asdict(self.options).items():
            setattr(self, name, value)
        self.task = task
        self.modalities = tuple(encoders)
        self.embed_dims = embed_dims
        owned = encoder_parameters(encoders, fusion_head)
        self._params = {m: [p for _, p in owned[m]] for m in self.modalities}
        self._param_names = {m: [n for n, _ in owned[m]] for m in self.modalities}
        # references only: the backbone owns these modules
        self.__dict__["_encoders"] = encoders
        self.__dict__["_fusion_head"] = fusion_head
        self.head_optimizer: torch.optim.Optimizer | None = None
        self._epoch = 0
        self._last: dict[str, Tensor] = {}
        self._pending: Tensor | None = None  # coefficients awaiting step() with modulate="update"
        self.setup()

    def setup(self) -> None:
        """Build the method's own modules and state (heads, their optimizer, histories); called at
        the end of ``__init__`` once options, modalities and the referenced modules are set."""

    def add_heads(self, heads: nn.ModuleDict) -> None:
        """Register the method's unimodal heads (``self.heads``) and give them their own Adam
        (``head_optimizer``, with the options ``lr`` and ``weight_decay``)."""
        self.heads = heads
        self.head_optimizer = torch.optim.Adam(heads.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ window
    @property
    def active(self) -> bool:
        """Whether the current epoch lies in the modulation window ``[start_epoch, end_epoch)``."""
        return self._epoch >= self.start_epoch and (self.end_epoch is None or self._epoch < self.end_epoch)

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Set the current epoch; entering or leaving the window calls :meth:`_on_window_change`."""
        was = self.active
        self._epoch = int(epoch)
        if self.active != was:
            self._on_window_change()

    def _on_window_change(self) -> None:
        pass

    # ------------------------------------------------------------------ report
    def touched(self) -> dict[str, list[str]]:
        """Modality -> names (inside its encoder) of the parameters whose gradients or updates it scales."""
        return {m: list(self._param_names[m]) for m in self.modalities}

    @property
    def stats(self) -> dict[str, dict[str, float]]:
        """Per-modality quantities of the last :meth:`rebalance_` as ``{stat: {modality: float}}``
        (one host sync, on access), plus any method-specific groups; empty before the first step."""
        if not self._last:
            return {}
        keys = list(self._last)
        dev = next(iter(self._last.values())).device
        table = torch.stack([self._last[k].to(dev, torch.float64) for k in keys]).cpu().tolist()
        out = {k: dict(zip(self.modalities, row)) for k, row in zip(keys, table)}
        out.update(self._extra_stats())
        return out

    def _extra_stats(self) -> dict[str, dict[str, float]]:
        return {}

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict:
        """The running state beyond the heads' weights, so that ``state_dict()`` /
        ``load_state_dict()`` resume a run exactly: the epoch, the head optimizer, the statistics of
        the last step, pending coefficients and the attributes named in :attr:`state_attributes`."""
        return {
            "epoch": self._epoch,
            "head_optimizer": None if self.head_optimizer is None else self.head_optimizer.state_dict(),
            "last": dict(self._last),
            "pending": self._pending,
            "attributes": {name: getattr(self, name) for name in self.state_attributes},
        }

    def set_extra_state(self, state: dict) -> None:
        self._epoch = int(state["epoch"])
        if self.head_optimizer is not None and state["head_optimizer"] is not None:
            self.head_optimizer.load_state_dict(state["head_optimizer"])
        self._last = dict(state["last"])
        self._pending = state["pending"]
        for name, value in state["attributes"].items():
            if name not in self.state_attributes:
                raise ValueError(f"{self.method} state holds an unknown attribute {name!r}")
            setattr(self, name, value)

    def alignment_loss(self) -> Tensor:
        """Extra term added to the task loss; zero for methods without one."""
        return self.zero_loss()

    def zero_loss(self) -> Tensor:
        """A zero on the fusion head's device and dtype (the loss of a step without a term)."""
        w = self._fusion_head.weight
        return torch.zeros((), device=w.device, dtype=w.dtype)

    # ------------------------------------------------------------------ the step
    def rebalance_(
        self,
        embeddings: Mapping[str, Tensor],
        fused_output: Tensor,
        targets: Tensor,
        masks: Mapping[str, Tensor] | None = None,
    ) -> None:
        """One step after ``loss.backward()`` and before :meth:`step`.

        embeddings[m]: (N, d_z^m) encoder outputs z^m; fused_output: the backbone's prediction,
        logits (N, C) or scores (N,); targets: (N,); masks[m]: (N,) bool, True where m is present.
        """
        raise NotImplementedError

    def step(self, optimizer: torch.optim.Optimizer, closure=None):
        """``optimizer.step()``; with ``modulate="update"`` encoder m's parameter change of that step
        is then scaled by the coefficient of the last :meth:`rebalance_`:
        ``θ ← θ_{t−1} + k^m (θ_t − θ_{t−1})`` (momentum and weight decay included, whatever the
        optimizer). Every other parameter's step is the optimizer's own."""
        coeff, self._pending = self._pending, None
        if coeff is None:
            return optimizer.step() if closure is None else optimizer.step(closure)
        with torch.no_grad():
            before = {m: [p.detach().clone() for p in self._params[m]] for m in self.modalities}
        result = optimizer.step() if closure is None else optimizer.step(closure)
        with torch.no_grad():
            for i, m in enumerate(self.modalities):
                for group, old in _by_device(self._params[m], before[m]):
                    news = [p.data for p in group]
                    k = coeff[i].to(device=news[0].device, dtype=news[0].dtype)
                    torch._foreach_sub_(news, old)
                    torch._foreach_mul_(news, k)
                    torch._foreach_add_(news, old)
        return result

    # ------------------------------------------------------------------ the API of subclasses
    def _check(self, embeddings, fused_output: Tensor, targets: Tensor, masks) -> int:
        if set(embeddings) != set(self.modalities):
            raise ValueError(f"embeddings must have exactly the modalities {list(self.modalities)}, got {list(embeddings)}")
        n = fused_output.shape[0]
        for m in self.modalities:
            z = embeddings[m]
            if z.dim() != 2 or z.shape != (n, self.embed_dims[m]):
                raise ValueError(f"embeddings[{m!r}] must have shape ({n}, {self.embed_dims[m]}), got {tuple(z.shape)}")
        if targets.shape[0] != n:
            raise ValueError(f"targets must have {n} entries (one per row of fused_output), got {tuple(targets.shape)}")
        if masks is not None and self.missing_aware:
            for m in self.modalities:
                if m not in masks:
                    raise ValueError(f"masks is missing modality {m!r}")
                if masks[m].shape != (n,):
                    raise ValueError(f"masks[{m!r}] must have shape ({n},), got {tuple(masks[m].shape)}")
        if not any(p.grad is not None for ps in self._params.values() for p in ps):
            raise RuntimeError(
                f"{self.method}.rebalance_ found no gradient on any encoder parameter: call it after "
                "loss.backward() (and before optimizer.zero_grad())"
            )
        return n

    def prepare(self, embeddings, fused_output: Tensor, targets: Tensor, masks) -> tuple[list[Tensor], Tensor | None, Tensor]:
        """Checked inputs: detached z^m in modality order (the fusion head's dtype), the (M, N) bool
        availability (None without masks or missing-awareness) and the detached targets."""
        self._check(embeddings, fused_output, targets, masks)
        w = self._fusion_head.weight
        zs = [embeddings[m].detach().to(w.dtype) for m in self.modalities]
        present = None
        if self.missing_aware and masks is not None:
            present = torch.stack([masks[m].to(device=w.device, dtype=torch.bool) for m in self.modalities])
        return zs, present, targets.detach().to(w.device)

    def _head_losses(self, outs: Tensor, targets: Tensor, present: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-modality task loss of stacked head outputs (M, N, C): CE, or MSE for regression;
        masked mean over present samples. Returns ``(loss (M,), count (M,))``."""
        M, n = outs.shape[0], outs.shape[1]
        if self.task == "classification":
            logp = BF.log_softmax(outs)
            per = -logp.gather(-1, targets.long().expand(M, n).unsqueeze(-1)).squeeze(-1)
        else:
            per = (outs.reshape(M, n) - targets.to(outs.dtype).unsqueeze(0)).pow(2)
        return BF.masked_sample_mean(per, present)

    def _train_heads(self, outs: Tensor, targets: Tensor, present: Tensor | None) -> tuple[Tensor, Tensor]:
        """One ``head_optimizer`` step on the heads' task losses (outs: (M, N, C) with a graph);
        returns the detached ``(loss (M,), count (M,))``."""
        loss, count = self._head_losses(outs, targets, present)
        self.head_optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.head_optimizer.step()
        return loss.detach(), count

    def _grads(self, m: str) -> list[Tensor]:
        return [p.grad for p in self._params[m] if p.grad is not None]

    def grad_norms(self) -> Tensor:
        """L2 norm of each encoder's whole gradient, (M,) float64."""
        return BF.grad_norms([self._grads(m) for m in self.modalities], self._fusion_head.weight.device)

    def scale_(self, coeff: Tensor, noise: str | None = None) -> None:
        """Apply ``coeff`` (M,) to the encoders: scale their gradients now (``modulate="gradient"``),
        or keep it for :meth:`step` (``"update"``). ``noise`` (``"before"`` / ``"after"``) adds
        ``N(0, (std + 1e-8)²)`` to each gradient, with the std of the unscaled (before) or scaled
        (after) gradient; with ``"update"`` the gradients are never scaled, so both use its own std."""
        _one_of("noise", noise, NOISE_REFERENCES)
        if self.modulate == "update":
            self._pending = coeff.detach()
            if noise is not None:
                for m in self.modalities:
                    _add_noise(self._grads(m), None)
            return
        for i, m in enumerate(self.modalities):
            grads = self._grads(m)
            if not grads:
                continue
            stds = [_std(g) for g in grads] if noise == "before" else None
            for gs, _ in _by_device(grads):
                torch._foreach_mul_(gs, coeff[i].to(device=gs[0].device, dtype=gs[0].dtype))
            if noise is not None:
                _add_noise(grads, stds)


def _by_device(tensors: list[Tensor], *others: list[Tensor]):
    """Group ``tensors`` (and the matching entries of ``others``) by (device, dtype) for foreach ops."""
    groups: dict[tuple, list[list[Tensor]]] = {}
    for i, t in enumerate(tensors):
        g = groups.setdefault((t.device, t.dtype), [[] for _ in range(1 + len(others))])
        g[0].append(t)
        for j, o in enumerate(others):
            g[1 + j].append(o[i])
    for g in groups.values():
        yield (g[0], *g[1:]) if others else (g[0], None)


def _std(g: Tensor) -> Tensor:
    """Standard deviation of a gradient plus 1e-8 (0 for a single element, whose std is undefined)."""
    if g.numel() < 2:
        return g.new_zeros(())
    return g.std() + 1e-8


def _add_noise(grads: list[Tensor], stds: list[Tensor] | None) -> None:
    if not grads:
        return
    stds = [_std(g) for g in grads] if stds is None else stds
    torch._foreach_add_(grads, [torch.randn_like(g) * s for g, s in zip(grads, stds)])
