"""MCE (Zhao et al., *Towards a General Framework for Handling Missing Modalities under Imbalanced
Missing Rates*, Pattern Recognition 2025): modality capability enhancement, as a two-stage backbone.

Learning-capability enhancement (LCE) weights each modality's auxiliary losses by a dataset-level
factor a^m (inverse observed rate) and a batch-level factor b^m (the gap between a frozen unimodal
model's accuracy and the modality's Shapley value in the fused model); representation-capability
enhancement (RCE) adds subset prediction and cross-modal completion. Utterance-level: dialogue
context and speakers are not used. docs/baselines.md (MCE) has the equations and the departures from
the public code.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batch import Batch
from .base import Backbone, BackboneOutput, Stage


# ---------------------------------------------------------------------------------------------
# subsets and Shapley values (pure functions, tested against plain loops)


@lru_cache(maxsize=None)
def _subset_bits(num_modalities: int) -> torch.Tensor:
    """(2^M, M) bool: row S holds the members of subset S (bit k of S = modality k)."""
    codes = torch.arange(2**num_modalities)
    return (codes[:, None] >> torch.arange(num_modalities)[None, :]) & 1 == 1


@lru_cache(maxsize=None)
def shapley_matrix(num_modalities: int) -> torch.Tensor:
    """W (2^M, M) float64 with φ = v W the exact Shapley values of games v (.., 2^M), v[∅] = v[0].

    φ_m = Σ_{S ⊆ M∖{m}} |S|! (M−|S|−1)! / M! · (v(S ∪ {m}) − v(S)), so
    W[S, m] = w(|S|−1) for m ∈ S and −w(|S|) for m ∉ S, with w(k) = k! (M−k−1)! / M!.
    """
    M = num_modalities
    bits = _subset_bits(M)
    size = bits.sum(1)
    w = [math.factorial(k) * math.factorial(M - k - 1) / math.factorial(M) for k in range(M)]
    W = torch.zeros(2**M, M, dtype=torch.float64)
    for S in range(2**M):
        for m in range(M):
            if bits[S, m]:
                W[S, m] = w[int(size[S]) - 1]
            elif size[S] < M:
                W[S, m] = -w[int(size[S])]
    return W


def shapley_values(values: torch.Tensor) -> torch.Tensor:
    """Exact Shapley values (.., M) of games given by their values (.., 2^M) on every subset
    (index S = bitmask of the coalition, values[..., 0] = v(∅))."""
    M = int(round(math.log2(values.shape[-1])))
    if 2**M != values.shape[-1]:
        raise ValueError(f"expected values on 2^M subsets, got {values.shape[-1]}")
    return values.to(torch.float64) @ shapley_matrix(M).to(values.device)


def observed_codes(observed: torch.Tensor) -> torch.Tensor:
    """(N,) int64 bitmask O_i of the observed modalities of each row of ``observed`` (N, M) bool."""
    weights = 2 ** torch.arange(observed.shape[1], device=observed.device)
    return (observed.long() * weights).sum(1)


def subset_rows(observed: torch.Tensor, all_subsets: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The (utterance, subset) pairs MCE evaluates: every non-empty T ⊆ O_i of each utterance i
    (``all_subsets``) or T = O_i only; an utterance with O_i = ∅ gets the one row T = ∅.

    Returns (row_utt (R,), row_code (R,)), sorted by utterance then subset code;
    R = Σ_i max(2^{|O_i|} − 1, 1).
    """
    N, M = observed.shape
    obs = observed_codes(observed)
    if not all_subsets:
        return torch.arange(N, device=observed.device), obs
    codes = torch.arange(2**M, device=observed.device)
    inside = (obs[:, None] & codes[None, :]) == codes[None, :]
    keep = inside & ((codes[None, :] != 0) | (obs[:, None] == 0))
    utt, idx = keep.nonzero(as_tuple=True)
    return utt, codes[idx]


def correct(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 where a prediction is right: argmax = y (classification, (R, C)), or the two-class view's
    sign agreement 1[ŷ > 0] = 1[y > 0] (regression, (R,))."""
    if pred.dim() == 2:
        return (pred.argmax(-1) == target).to(torch.float64)
    return ((pred > 0) == (target > 0)).to(torch.float64)


def batch_modality_values(row_correct: torch.Tensor, row_utt: torch.Tensor, row_code: torch.Tensor,
                          observed: torch.Tensor) -> torch.Tensor:
    """Φ^m = Σ_i φ_i^m, the batch's Shapley value of each modality (M,).

    Utterance i plays the game v_i(S) = c_i(S ∩ O_i) with c_i(T) = 1 when the fused model given only
    the modalities T of i is right, c_i(∅) = 0; missing modalities are null players (φ_i^m = 0).
    ``row_correct``, ``row_utt``, ``row_code``: c_i(T) for every pair of :func:`subset_rows`.
    """
    N, M = observed.shape
    table = torch.zeros(N, 2**M, dtype=torch.float64, device=observed.device)
    table[row_utt, row_code] = row_correct.to(torch.float64)
    table[:, 0] = 0.0
    codes = torch.arange(2**M, device=observed.device)
    games = table.gather(1, observed_codes(observed)[:, None] & codes[None, :])
    return shapley_values(games).sum(0)


# ---------------------------------------------------------------------------------------------
# layers


class MLPHead(nn.Module):
    """FC classifier: [Linear → ReLU → Dropout] per hidden width, then the output Linear ``out``."""

    def __init__(self, in_dim: int, layers: tuple[int, ...], out_dim: int, dropout: float):
        super().__init__()
        body, d = [], in_dim
        for width in layers:
            body += [nn.Linear(d, width), nn.ReLU(), nn.Dropout(dropout)]
            d = width
        self.body = nn.Sequential(*body)
        self.out = nn.Linear(d, out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body(x)
        return self.out(hidden), hidden


class ModalityTransformer(nn.Module):
    """One pre-norm block over the M modality tokens: t = x + p; t = t + Drop(Attn(LN t));
    r = t + FFN(LN t) (multi-head self-attention, bias-free qkv; FFN d → d_ff → d with GELU)."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float, depth: int = 1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim {dim} must be divisible by heads {heads}")
        self.heads, self.depth = heads, depth
        self.norm1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim, bias=False) for _ in range(depth))
        self.proj = nn.ModuleList(nn.Linear(dim, dim) for _ in range(depth))
        self.norm2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.ffn = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim),
                          nn.Dropout(dropout))
            for _ in range(depth))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        R, M, d = x.shape
        h = self.heads
        for j in range(self.depth):
            x = x + pos
            q, k, v = self.qkv[j](self.norm1[j](x)).reshape(R, M, 3, h, d // h).permute(2, 0, 3, 1, 4)
            att = torch.softmax((q @ k.transpose(-2, -1)) * (d // h) ** -0.5, -1)
            att = F.dropout(att, self.dropout, self.training)
            a = self.proj[j]((att @ v).transpose(1, 2).reshape(R, M, d))
            # attention output dropout, then the block's own dropout (as in the public block)
            x = x + F.dropout(F.dropout(a, self.dropout, self.training), self.dropout, self.training)
            x = x + self.ffn[j](self.norm2[j](x))
        return x


# ---------------------------------------------------------------------------------------------
# the model


class MCE(Backbone):
    """MCE: encoders, cross-modal completion transformer, fused classifier, unimodal heads, and frozen
    unimodal reference models trained in a first stage.

    Stage ``unimodal`` (``unimodal_epochs``): reference models g^m = H_ref^m ∘ φ_ref^m trained alone,
    loss Σ_m mean_{i: e_i^m=1} ℓ(g^m(x_i^m), y_i); prediction = mean of g^m over the observed m
    (detached in training: it only selects on dev). Stage ``train`` (``train_epochs``, None = the
    config's ``epochs``): references frozen; z^m = φ^m(x^m) (a zero token where m is missing),
    r(T) = Transformer([e_T^m z^m]_m + p) for a subset T of modalities, ŷ = F([r^1; …; r^M]) on T = O_i,
    and aux_loss = λ_rec L_rec + λ_sep L_sep + λ_sub L_sub (docs/baselines.md (MCE)):

    - L_sub = (1/|I|) Σ_i Σ_{∅≠T⊊O_i} ℓ(F(r_i(T)), y_i) / (2^{|O_i|}−1)      (subset prediction)
    - L_rec = (1/|I|) Σ_m a^m b^m Σ_i Σ_{∅≠T⊊O_i, m∈O_i∖T} |r_i^m(T) − r_i^m(O_i)|₁/d / (2^{|O_i|}−1)
      (cross-modal completion of a hidden *observed* modality)
    - L_sep = (1/M) Σ_m a^m b^m mean_{i: e_i^m=1} ℓ(H^m(r_i^m(O_i)), y_i)  (unimodal heads)

    with I the utterances with an observed modality, a^m = N_seen / N_seen^m (1/(1 − missing rate),
    counted over the training utterances seen) when ``use_a``, b^m = max(0, U^m − Φ^m) / n^m when
    ``use_b`` (U^m: utterances of the batch with m observed that g^m gets right; Φ^m: the batch's
    exact Shapley value of m, :func:`batch_modality_values`; n^m: utterances with m observed).
    """

    STAGES = ("unimodal", "train")

    def __init__(
        self,
        dims: dict[str, int],
        out_dim: int,
        embed_dim: int = 128,
        cls_layers: tuple[int, ...] | list[int] = (128, 128),
        dropout: float = 0.5,
        heads: int = 8,
        ff_dim: int = 2048,
        attn_dropout: float = 0.1,
        depth: int = 1,
        rec_weight: float = 1.0,
        sep_weight: float = 1.0,
        sub_weight: float = 2.0,
        use_a: bool = True,
        use_b: bool = True,
        unimodal_epochs: int = 20,
        train_epochs: int | None = None,
    ):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"MCE needs at least two modalities, got {list(dims)}")
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim}")
        cls_layers = tuple(int(w) for w in cls_layers)
        if not cls_layers or any(w < 1 for w in cls_layers):
            raise ValueError(f"cls_layers must be a non-empty list of positive widths, got {list(cls_layers)}")
        for key, val in dict(rec_weight=rec_weight, sep_weight=sep_weight, sub_weight=sub_weight).items():
            if val < 0:
                raise ValueError(f"{key} must be >= 0, got {val}")
        if unimodal_epochs < 0 or (train_epochs is not None and train_epochs < 1):
            raise ValueError(f"unimodal_epochs must be >= 0 and train_epochs >= 1 or None, got "
                             f"{unimodal_epochs}, {train_epochs}")
        if use_b and unimodal_epochs == 0:
            raise ValueError("use_b needs the unimodal reference models: set unimodal_epochs >= 1 or use_b: false")
        self.modalities = tuple(dims)
        self.out_dim = out_dim
        self._embed_dim = embed_dim
        self.weights = dict(rec=float(rec_weight), sep=float(sep_weight), sub=float(sub_weight))
        self.use_a, self.use_b = bool(use_a), bool(use_b)
        self.unimodal_epochs, self.train_epochs = int(unimodal_epochs), train_epochs

        def encoder(d):
            return nn.Sequential(nn.Linear(d, embed_dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(embed_dim, embed_dim), nn.ReLU())

        M = len(dims)
        self.encoders = nn.ModuleDict({m: encoder(d) for m, d in dims.items()})
        self.pos = nn.Parameter(torch.zeros(1, M, embed_dim))
        self.inter = ModalityTransformer(embed_dim, heads, ff_dim, attn_dropout, depth)
        self.classifier = MLPHead(M * embed_dim, cls_layers, out_dim, dropout)
        self.fusion_head = self.classifier.out
        self.unimodal_heads = nn.ModuleDict({m: MLPHead(embed_dim, cls_layers, out_dim, dropout) for m in dims})
        self.reference_encoders = nn.ModuleDict({m: encoder(d) for m, d in dims.items()})
        self.reference_heads = nn.ModuleDict({m: MLPHead(embed_dim, cls_layers, out_dim, dropout) for m in dims})
        self.register_buffer("seen", torch.zeros(M + 1, dtype=torch.float64))  # [observed per m..., total]
        self._last: dict[str, torch.Tensor] = {}
        self.stage = "train"
        self.set_stage("train")

    # -- contract and stages -----------------------------------------------------------------

    @property
    def embed_dims(self) -> dict[str, int]:
        return {m: self._embed_dim for m in self.modalities}

    def stages(self) -> tuple[Stage, ...]:
        first = (Stage("unimodal", epochs=self.unimodal_epochs),) if self.unimodal_epochs > 0 else ()
        return first + (Stage("train", epochs=self.train_epochs),)

    def set_stage(self, name: str) -> None:
        """``unimodal``: only the reference models train; ``train``: everything but them."""
        if name not in self.STAGES:
            raise ValueError(f"MCE has the stages {list(self.STAGES)}, got {name!r}")
        self.stage = name
        reference = {id(p) for p in self.reference_parameters()}
        for p in self.parameters():
            p.requires_grad_((id(p) in reference) == (name == "unimodal"))
        self.train(self.training)

    def reference_parameters(self):
        yield from self.reference_encoders.parameters()
        yield from self.reference_heads.parameters()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.stage == "train":  # the references are frozen models: no dropout
            self.reference_encoders.eval()
            self.reference_heads.eval()
        return self

    # -- pieces ------------------------------------------------------------------------------

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """ℓ per row: cross-entropy (classification) or squared error (regression)."""
        if self.out_dim == 1:
            return (pred - target.to(pred.dtype)) ** 2
        return F.cross_entropy(pred, target, reduction="none")

    @staticmethod
    def _observed_mean(loss: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """mean of ``loss`` over the observed rows (0 when none is)."""
        return (loss * observed).sum() / observed.sum().clamp(min=1)

    @property
    def last_values(self) -> dict[str, dict[str, float]]:
        """The last training step's per-modality Φ^m/n^m (``shapley``), U^m/n^m (``reference``),
        a^m and b^m; empty before the first step of stage ``train``."""
        return {k: {m: float(v[j]) for j, m in enumerate(self.modalities)} for k, v in self._last.items()}

    def _squeeze(self, pred: torch.Tensor) -> torch.Tensor:
        return pred.squeeze(-1) if self.out_dim == 1 else pred

    def _reference(self, x: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        out = {}
        for m in self.modalities:
            z = self.reference_encoders[m](x[m])
            logits, hidden = self.reference_heads[m](z)
            out[m] = (z, self._squeeze(logits), hidden)
        return out

    def _count(self, observed: torch.Tensor) -> None:
        if self.training:
            with torch.no_grad():
                self.seen[:-1] += observed.sum(0).to(self.seen.dtype)
                self.seen[-1] += observed.shape[0]

    def modality_factors(self) -> torch.Tensor:
        """a^m = N_seen / N_seen^m over the training utterances seen so far (1 before any)."""
        seen = self.seen.to(torch.float32)
        return torch.where(seen[:-1] > 0, seen[-1] / seen[:-1].clamp(min=1), torch.ones_like(seen[:-1]))

    # -- forward -----------------------------------------------------------------------------

    def forward(self, batch: Batch) -> BackboneOutput:
        valid = batch.valid
        observed = torch.stack([batch.masks[m][valid] for m in self.modalities], 1)  # (N, M)
        # features of missing utterances are never read
        x = {m: torch.where(observed[:, j, None], batch.features[m][valid], 0.0)
             for j, m in enumerate(self.modalities)}
        y = batch.targets
        self._count(observed)
        if self.stage == "unimodal":
            return self._forward_unimodal(x, observed, y)
        return self._forward_train(x, observed, y)

    def _forward_unimodal(self, x, observed, y) -> BackboneOutput:
        ref = self._reference(x)
        e = observed.to(next(iter(x.values())).dtype)
        count = e.sum(1).clamp(min=1)
        preds = torch.stack([ref[m][1] for m in self.modalities], 1)  # (N, M[, C])
        w = e if preds.dim() == 2 else e[:, :, None]
        pred = (preds * w).sum(1) / (count if preds.dim() == 2 else count[:, None])
        fused = (torch.stack([ref[m][2] for m in self.modalities], 1) * e[:, :, None]).sum(1) / count[:, None]
        emb = {m: ref[m][0] * e[:, j, None] for j, m in enumerate(self.modalities)}
        aux = None
        if self.training:
            aux = sum(self._observed_mean(self._loss(ref[m][1], y), observed[:, j])
                      for j, m in enumerate(self.modalities))
            pred = pred.detach()
        return BackboneOutput(prediction=pred, embeddings=emb, fused=fused, aux_loss=aux)

    def _forward_train(self, x, observed, y) -> BackboneOutput:
        N, M = observed.shape
        z = torch.stack([self.encoders[m](x[m]) for m in self.modalities], 1) * observed[:, :, None]
        row_utt, row_code = subset_rows(observed, all_subsets=self.training)
        keep = _subset_bits(M).to(z.device)[row_code]  # (R, M)
        r = self.inter(z[row_utt] * keep[:, :, None], self.pos)  # (R, M, d)
        logits, hidden = self.classifier(r.reshape(r.shape[0], -1))
        logits = self._squeeze(logits)
        obs = observed_codes(observed)
        is_full = row_code == obs[row_utt]
        full = is_full.nonzero(as_tuple=True)[0]  # one row per utterance, in utterance order
        emb = {m: z[:, j] for j, m in enumerate(self.modalities)}
        out = BackboneOutput(prediction=logits[full], embeddings=emb, fused=hidden[full])
        if self.training:
            out.aux_loss = self._aux_loss(x, observed, y, r, logits, row_utt, row_code, keep, is_full, full)
        return out

    def _aux_loss(self, x, observed, y, r, logits, row_utt, row_code, keep, is_full, full) -> torch.Tensor:
        N, M = observed.shape
        n_obs = observed.sum(1)
        has_any = n_obs > 0
        n_utt = has_any.sum().clamp(min=1).to(r.dtype)
        per_utt = (2.0 ** n_obs.to(r.dtype) - 1).clamp(min=1)  # 2^{|O_i|} − 1 subsets
        proper = ~is_full & (row_code != 0)
        row_scale = proper.to(r.dtype) / per_utt[row_utt]

        # batch-level factor b^m from the frozen references and the Shapley values
        with torch.no_grad():
            ref = self._reference(x)
            upper = torch.stack([(correct(ref[m][1], y) * observed[:, j]).sum()
                                 for j, m in enumerate(self.modalities)])
            phi = batch_modality_values(correct(logits.detach(), y[row_utt]), row_utt, row_code, observed)
            n_m = observed.sum(0).to(torch.float64)
            b = ((upper - phi).clamp(min=0) / n_m.clamp(min=1)).to(r.dtype)
            a = self.modality_factors().to(r.dtype)
        factor = torch.ones(M, dtype=r.dtype, device=r.device)
        if self.use_a:
            factor = factor * a
        if self.use_b:
            factor = factor * b

        sub = (self._loss(logits, y[row_utt]) * row_scale).sum() / n_utt

        # completion of each observed modality hidden in T, towards its token given all of O_i
        target = r[full][row_utt]  # r_i(O_i) for each row
        hidden_obs = observed[row_utt] & ~keep  # m ∈ O_i ∖ T
        l1 = (r - target).abs().mean(-1)  # (R, M)
        rec = ((l1 * hidden_obs * row_scale[:, None]).sum(0) * factor).sum() / n_utt

        r_full = r[full]
        sep = torch.stack([
            self._observed_mean(self._loss(self._squeeze(self.unimodal_heads[m](r_full[:, j])[0]), y), observed[:, j])
            for j, m in enumerate(self.modalities)])
        sep = (sep * factor).mean()

        n = n_m.clamp(min=1)
        self._last = {"shapley": phi / n, "reference": upper / n, "a": a, "b": b}
        return self.weights["rec"] * rec + self.weights["sep"] * sep + self.weights["sub"] * sub
