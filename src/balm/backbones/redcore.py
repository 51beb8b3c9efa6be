"""RedCore (Sun et al., AAAI 2024): relative-advantage-aware cross-modal representation learning
for missing modalities with imbalanced missing rates — variational (information-bottleneck)
encoders, cross-modal generators of each modality's representation from the others, and
supervision weights that move against each modality's relative advantage."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batch import Batch
from .base import Backbone, BackboneOutput


def _init_linear(module: nn.Module) -> None:
    """He-normal (fan-in) weights, as RedCore's ``init_net(init_type='kaiming')``; the biases keep
    PyTorch's initialisation (RedCore zeroes them, which makes the first step's gradient through
    the LayerNorm of a missing modality's all-zero input about 1e19: docs/baselines.md)."""
    for mod in module.modules():
        if isinstance(mod, nn.Linear):
            nn.init.kaiming_normal_(mod.weight, a=0, mode="fan_in")


class UtteranceBlock(nn.Module):
    """RedCore's residual attention block on a sequence of length one (one vector per utterance).

    x ← x + LN(W_o (k ⊙ W_v LN(x)));  x ← x + LN(MLP(LN(x)))  (MLP: E → 4E → E, ReLU, dropout).
    Self-attention over a single step gives every head the weight 1, so it reduces to the value
    and output projections; k ∈ {0, 1/(1−p)} per head is the attention-weight dropout p.
    """

    def __init__(self, dim: int, heads: int, attn_dropout: float, mlp_dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim ({dim}) must be a multiple of heads ({heads})")
        self.heads, self.attn_dropout = heads, attn_dropout
        self.ln_1, self.ln_12, self.ln_2, self.ln_22 = (nn.LayerNorm(dim) for _ in range(4))
        self.value, self.out = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(mlp_dropout), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.value(self.ln_1(x)).reshape(x.shape[0], self.heads, -1)
        if self.training and self.attn_dropout > 0:
            v = v * F.dropout(v.new_ones(x.shape[0], self.heads, 1), self.attn_dropout, True)
        x = x + self.ln_12(self.out(v.reshape(x.shape)))
        return x + self.ln_22(self.mlp(self.ln_2(x)))


class VariationalEncoder(nn.Module):
    """s = σ(blocks(W_in x)); [μ; log σ²] = W_μσ s; z = μ + ε σ in training, z = μ in evaluation."""

    def __init__(self, in_dim: int, dim: int, layers: int, heads: int, attn_dropout: float, mlp_dropout: float):
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.blocks = nn.Sequential(*(UtteranceBlock(dim, heads, attn_dropout, mlp_dropout) for _ in range(layers)))
        self.muvar = nn.Linear(dim, 2 * dim)
        _init_linear(self)
        for block in self.blocks:
            nn.init.normal_(block.value.weight, std=dim ** -0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.muvar(torch.sigmoid(self.blocks(self.proj(x)))).chunk(2, -1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return z, mu, logvar


def _mlp(sizes: list[int], act: type[nn.Module]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    return layers[:-1]


class CrossModalGenerator(nn.Module):
    """RedCore's ``ResidualXE``: n blocks of x_in ← x_in + x_out, x_out = D_b(E_b(x_in)), then
    ĝ = W_2 ReLU(W_1 (x_in + x_out)). E_b: in → l_1 → … → l_k (LeakyReLU between),
    D_b: l_k → … → l_1 → in (ReLU between)."""

    def __init__(self, in_dim: int, out_dim: int, layers: list[int], blocks: int):
        super().__init__()
        self.encoders = nn.ModuleList(nn.Sequential(*_mlp([in_dim, *layers], nn.LeakyReLU)) for _ in range(blocks))
        self.decoders = nn.ModuleList(nn.Sequential(*_mlp([*layers[::-1], in_dim], nn.ReLU)) for _ in range(blocks))
        self.transition = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in, x_out = x, torch.zeros_like(x)
        for enc, dec in zip(self.encoders, self.decoders):
            x_in = x_in + x_out
            x_out = dec(enc(x_in))
        return self.transition(x_in + x_out)


class Classifier(nn.Module):
    """RedCore's ``FcClassifier``: Linear + ReLU + Dropout per hidden layer, then ``out``."""

    def __init__(self, in_dim: int, layers: list[int], out_dim: int, dropout: float):
        super().__init__()
        mods: list[nn.Module] = []
        for width in layers:
            mods += [nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = width
        self.body = nn.Sequential(*mods)
        self.out = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.out(h), h


class RedCore(Backbone):
    """RedCore on utterance-level features (no dialogue context), any M ≥ 2, classification and
    regression; one training stage.

    Per modality m, with e^m its availability (features of missing utterances are replaced by
    zeros before the encoder, as RedCore multiplies the input by the missing index):

        z^m, μ^m, log σ²^m = Enc_m(e^m x^m)                      (variational encoder, ``encoders[m]``)
        ĝ^m = G_m([z^k]_{k≠m})                                   (cross-modal generator)
        r^m = e^m z^m + (1 − e^m) ĝ^m                            (observed, or generated when missing)
        ŷ = W_pred C([r^1; …; r^M]),  ŷ^m = C_m(r^m)             (fusion and unimodal classifiers)

    ``aux_loss`` (training only; the trainer adds the task loss of ŷ):

        L_KL  = λ_KL Σ_m (1/N) Σ_{i: e_i^m=1} −Σ_j (1 + log σ²_ij − μ_ij² − σ²_ij)
        L_rec^m = Σ_{i: e_i^m=1} ||ĝ_i^m − z_i^m||² / Σ_i e_i^m   (targets only where m is observed)
        aux = L_KL + w_uni Σ_m ℓ(ŷ^m, y) + λ_rec Σ_m β_m L_rec^m

    Relative advantage (per optimizer step t, in training): L̄^m ← (1 − γ) L̄^m + γ L_rec^m
    (kept when m is absent from the batch); every ``eta_every`` steps η ← η · ``eta_growth``;
    every ``update_every`` steps a^m = (mean_k L̄^k − L̄^m) / mean_k L̄^k, β ← β − η a,
    β ← max(β, ``beta_floor``), β ← β / ||β||₂ (β starts at 1). A modality whose generated
    representation is already good (a^m > 0) gets less weight. β, L̄, η and t are buffers (saved
    with the model).
    """

    def __init__(
        self,
        dims: dict[str, int],
        out_dim: int,
        embed_dim: int = 128,
        layers: int = 3,
        heads: int = 8,
        attn_dropout: float = 0.2,
        mlp_dropout: float = 0.1,
        generator_layers: tuple[int, ...] | list[int] = (256, 128, 64),
        generator_blocks: int = 5,
        classifier_layers: tuple[int, ...] | list[int] = (128, 128),
        dropout: float = 0.5,
        kl_weight: float = 0.0008,
        rec_weight: float = 0.15,
        unimodal_weight: float = 1.0,
        ema: float = 0.7,
        eta: float = 0.1,
        eta_growth: float = 1.5,
        eta_every: int = 500,
        update_every: int = 3,
        beta_floor: float = 0.1,
    ):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"RedCore needs at least two modalities, got {list(dims)}")
        generator_layers, classifier_layers = [int(x) for x in generator_layers], [int(x) for x in classifier_layers]
        if out_dim < 1 or embed_dim < 1 or layers < 0 or generator_blocks < 1 or not generator_layers:
            raise ValueError("out_dim, embed_dim and generator_blocks must be >= 1, layers >= 0, generator_layers "
                             "non-empty")
        if any(w < 1 for w in generator_layers + classifier_layers):
            raise ValueError(f"layer widths must be >= 1, got {generator_layers} and {classifier_layers}")
        for name, p in (("attn_dropout", attn_dropout), ("mlp_dropout", mlp_dropout), ("dropout", dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        if not 0.0 < ema <= 1.0 or eta < 0 or eta_growth <= 0 or eta_every < 1 or update_every < 1 or beta_floor < 0:
            raise ValueError("need 0 < ema <= 1, eta >= 0, eta_growth > 0, eta_every >= 1, update_every >= 1, "
                             "beta_floor >= 0")
        if min(kl_weight, rec_weight, unimodal_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        self.modalities = tuple(dims)
        self.out_dim, self.embed_dim = out_dim, embed_dim
        self.kl_weight, self.rec_weight, self.unimodal_weight = kl_weight, rec_weight, unimodal_weight
        self.ema, self.eta_growth, self.eta_every = ema, eta_growth, eta_every
        self.update_every, self.beta_floor = update_every, beta_floor
        M = len(dims)
        self.encoders = nn.ModuleDict(
            {m: VariationalEncoder(d, embed_dim, layers, heads, attn_dropout, mlp_dropout) for m, d in dims.items()})
        self.generators = nn.ModuleDict(
            {m: CrossModalGenerator((M - 1) * embed_dim, embed_dim, generator_layers, generator_blocks)
             for m in self.modalities})
        fusion = Classifier(M * embed_dim, classifier_layers, out_dim, dropout)
        self.fusion, self.fusion_head = fusion.body, fusion.out
        self.unimodal = nn.ModuleDict(
            {m: Classifier(embed_dim, classifier_layers, out_dim, dropout) for m in self.modalities})
        for mod in (self.generators, self.fusion, self.fusion_head, self.unimodal):
            _init_linear(mod)
        self.register_buffer("beta", torch.ones(M))
        self.register_buffer("rec_ema", torch.zeros(M))
        self.register_buffer("eta", torch.tensor(float(eta)))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def embed_dims(self) -> dict[str, int]:
        return {m: self.embed_dim for m in self.modalities}

    def _squeeze(self, y: torch.Tensor) -> torch.Tensor:
        return y.squeeze(-1) if self.out_dim == 1 else y

    @torch.no_grad()
    def _update_weights(self, rec: torch.Tensor, present: torch.Tensor) -> None:
        """One step of the relative-advantage update of β from this batch's L_rec (``rec``, (M,))."""
        self.rec_ema.copy_(torch.where(present, (1 - self.ema) * self.rec_ema + self.ema * rec, self.rec_ema))
        self.eta.mul_(torch.where(self.step % self.eta_every == 0, self.eta_growth, 1.0))
        mean = self.rec_ema.mean()
        advantage = torch.where(mean > 0, (mean - self.rec_ema) / mean.clamp_min(1e-12), torch.zeros_like(mean))
        beta = (self.beta - self.eta * advantage).clamp_min(self.beta_floor)
        beta = beta / beta.norm().clamp_min(1e-12)
        self.beta.copy_(torch.where(self.step % self.update_every == 0, beta, self.beta))
        self.step.add_(1)

    def forward(self, batch: Batch) -> BackboneOutput:
        valid = batch.valid
        seen = batch.flat_masks()
        enc = {}
        for m in self.modalities:
            x = batch.features[m][valid]
            zero = torch.zeros((), dtype=x.dtype, device=x.device)
            enc[m] = self.encoders[m](torch.where(seen[m][:, None], x, zero))
        z = {m: enc[m][0] for m in self.modalities}
        gen = {m: self.generators[m](torch.cat([z[k] for k in self.modalities if k != m], -1)) for m in self.modalities}
        r = {m: torch.where(seen[m][:, None], z[m], gen[m]) for m in self.modalities}
        h = self.fusion(torch.cat([r[m] for m in self.modalities], -1))
        pred = self._squeeze(self.fusion_head(h))
        aux = None
        if self.training:
            y = batch.targets
            n = max(int(y.shape[0]), 1)
            e = {m: seen[m].to(pred.dtype) for m in self.modalities}
            kl = sum(-(((1 + enc[m][2] - enc[m][1] ** 2 - enc[m][2].exp()) * e[m][:, None]).sum()) / n
                     for m in self.modalities)
            counts = torch.stack([e[m].sum() for m in self.modalities])
            rec = torch.stack([(((gen[m] - z[m]) ** 2) * e[m][:, None]).sum() for m in self.modalities])
            rec = rec / counts.clamp_min(1.0)
            self._update_weights(rec.detach(), counts > 0)
            uni = 0.0
            for m in self.modalities:
                out = self._squeeze(self.unimodal[m](r[m])[0])
                uni = uni + (F.mse_loss(out, y.to(out.dtype)) if self.out_dim == 1 else F.cross_entropy(out, y))
            aux = self.kl_weight * kl + self.unimodal_weight * uni + self.rec_weight * (self.beta * rec).sum()
        return BackboneOutput(prediction=pred, embeddings=r, fused=h, aux_loss=aux)
