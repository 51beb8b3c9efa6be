"""Mi-CGA (the incomplete-multimodal conversational model of ``dangkh/IEMOCAP6_GAT``) on balm's
backbone contract, in plain torch: modality encoders, a dialogue LSTM, graph feature estimation,
feature-level cross-modal attention and a two-layer GATv2 over each dialogue's causal graph."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batch import Batch
from ._sequence import BiRNN
from .base import Backbone, BackboneOutput
from .gcnet import window_edges
from .graph import dropout
from .reconstruction import observed_reconstruction_loss

# the public model's fixed per-modality scales after the L1 normalisation (its ``maskFilter``)
PUBLIC_SCALES = {"text": 3.0, "audio": 2.0, "visual": 1.0}


def causal_edges(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mi-CGA's dialogue graph: utterance j sends to every utterance i ≥ j of its dialogue (self-loop
    included). Returns (src, dst) over nodes numbered in ``valid`` order."""
    e = window_edges(valid, torch.zeros_like(valid, dtype=torch.long), 0, -1, 1)
    return e.src, e.dst


def _degree(index: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(n, dtype=dtype, device=index.device).index_add_(0, index, torch.ones_like(index, dtype=dtype))


class SymGraphConv(nn.Module):
    """Graph convolution with symmetric normalisation (DGL's ``GraphConv(norm='both')``):
    h_i = W Σ_{j→i} x_j / √(d_out(j) d_in(i)) + b."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        norm = (_degree(src, n, x.dtype).clamp_min(1)[src] * _degree(dst, n, x.dtype).clamp_min(1)[dst]).rsqrt()
        agg = torch.zeros_like(x).index_add_(0, dst, x[src] * norm[:, None])
        return self.linear(agg)


class GATv2Conv(nn.Module):
    """GATv2 (Brody et al., 2022), ``heads`` heads of ``out_dim``, with a residual:

    e_ij = aᵀ LeakyReLU(W_s x_j + W_d x_i), α_ij = softmax_{j→i}(e_ij),
    h_i = ReLU(Σ_j α_ij W_s x_j + R x_i)   (R = identity when widths agree), per head.
    """

    def __init__(self, in_dim: int, out_dim: int, heads: int, negative_slope: float = 0.2):
        super().__init__()
        self.heads, self.out_dim, self.negative_slope = heads, out_dim, negative_slope
        self.fc_src = nn.Linear(in_dim, heads * out_dim)
        self.fc_dst = nn.Linear(in_dim, heads * out_dim)
        self.attn = nn.Parameter(torch.empty(heads, out_dim))
        self.res = nn.Linear(in_dim, heads * out_dim) if in_dim != heads * out_dim else nn.Identity()
        gain = nn.init.calculate_gain("relu")
        for lin in (self.fc_src, self.fc_dst) + ((self.res,) if isinstance(self.res, nn.Linear) else ()):
            nn.init.xavier_normal_(lin.weight, gain=gain)
            nn.init.zeros_(lin.bias)
        nn.init.xavier_normal_(self.attn, gain=gain)

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        n, H, d = x.shape[0], self.heads, self.out_dim
        fs = self.fc_src(x).view(n, H, d)
        fd = self.fc_dst(x).view(n, H, d)
        xs = fs[src]
        e = (F.leaky_relu(xs + fd[dst], self.negative_slope) * self.attn).sum(-1)  # (E, H)
        top = torch.full((n, H), -math.inf, dtype=e.dtype, device=e.device)
        top = top.scatter_reduce(0, dst[:, None].expand(-1, H), e.detach(), "amax", include_self=True)
        w = (e - top[dst]).exp()
        denom = torch.zeros(n, H, dtype=e.dtype, device=e.device).index_add_(0, dst, w)
        alpha = w / denom[dst]
        out = torch.zeros_like(fs).index_add_(0, dst, alpha[..., None] * xs)
        return F.relu(out + self.res(x).view(n, H, d)).reshape(n, H * d)


class CrossModalAttention(nn.Module):
    """Mi-CGA's feature-level cross-modal attention, every ordered modality pair (m ← n), per head:

    q = Q_m h^m, k = K_n h^n, v = V_n h^n ∈ R^k; S_ab = softmax_a(q_a k_b / √k);
    o^{m←n}_a = Σ_b S_ab v_b; head output = W_head [o^{m←n} for all pairs] + b_head (k wide).
    The output is the heads concatenated (heads · k).
    """

    def __init__(self, modalities: tuple[str, ...], in_dim: int, out_dim: int = 4, heads: int = 4):
        super().__init__()
        M = len(modalities)
        self.heads, self.out_dim, self.M = heads, out_dim, M
        self.q = nn.Parameter(torch.empty(M, in_dim, heads * out_dim))
        self.k = nn.Parameter(torch.empty(M, in_dim, heads * out_dim))
        self.v = nn.Parameter(torch.empty(M, in_dim, heads * out_dim))
        pairs = M * (M - 1)
        self.mix = nn.Parameter(torch.empty(heads, pairs * out_dim, out_dim))
        self.mix_bias = nn.Parameter(torch.zeros(heads, out_dim))
        gain = nn.init.calculate_gain("relu")
        for w in (self.q, self.k, self.v):
            std = gain * math.sqrt(2.0 / (in_dim + out_dim))
            nn.init.normal_(w, 0.0, std)
        nn.init.normal_(self.mix, 0.0, gain * math.sqrt(2.0 / (pairs * out_dim + out_dim)))
        off = ~torch.eye(M, dtype=torch.bool)
        self.register_buffer("pair_m", off.nonzero()[:, 0], persistent=False)
        self.register_buffer("pair_n", off.nonzero()[:, 1], persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h (N, M, d) -> (N, heads · out_dim)."""
        N, H, k = h.shape[0], self.heads, self.out_dim
        q = torch.einsum("nmd,mde->nme", h, self.q).view(N, self.M, H, k)
        key = torch.einsum("nmd,mde->nme", h, self.k).view(N, self.M, H, k)
        val = torch.einsum("nmd,mde->nme", h, self.v).view(N, self.M, H, k)
        qm, kn, vn = q[:, self.pair_m], key[:, self.pair_n], val[:, self.pair_n]  # (N, P, H, k)
        s = torch.softmax(qm[..., :, None] * kn[..., None, :] / math.sqrt(k), dim=-2)  # (N, P, H, a, b)
        o = (s * vn[..., None, :]).sum(-1)  # (N, P, H, k)
        o = o.permute(0, 2, 1, 3).reshape(N, H, -1)  # (N, H, P·k)
        return (torch.einsum("nhp,hpk->nhk", o, self.mix) + self.mix_bias).reshape(N, H * k)


class MiCGA(Backbone):
    """Mi-CGA; its feature-estimation loss is off by default (the BALM paper's protocol).

    φ^m (Eq. 11): z^m = W_m x^m + b_m (``enc_dim`` = 64). Fusion (Eq. 12), u = [z^1; …; z^M] with
    dropout: c = bi-LSTM(u) (``context_hidden`` per direction); feature estimation
    ũ = ½(u + D(GC(u))) over the causal dialogue graph (j → i for i ≥ j; GC a symmetric-normalised
    graph convolution, D linear; ``feature_estimation``); ū = s ⊙ ũ/‖ũ‖₁ with fixed per-modality
    scales s (``scales``; the public text 3, audio 2, visual 1, others 1); a = cross-modal attention
    of ū's modality blocks (``cross_modal``); g = GATv2(GATv2(ū)) (``gat_hidden`` × ``heads``, then
    ``gat_out`` × ``heads``, dropout ``gat_dropout`` between). fused h = [g; c; a]; ŷ = W_pred h.

    ``reconstruction`` λ > 0 returns ``aux_loss`` = λ L_rec, the squared error between ũ's modality
    blocks and z^m on the observed modalities (the public loss compares ũ with the encoding of the
    complete features), in training mode; it needs ``feature_estimation``.
    """

    def __init__(
        self,
        dims: dict[str, int],
        out_dim: int,
        enc_dim: int = 64,
        encoder_dropout: float = 0.5,
        context_hidden: int = 8,
        gat_hidden: int = 32,
        gat_out: int = 4,
        heads: int = 4,
        gat_dropout: float = 0.75,
        cross_modal: bool = True,
        feature_estimation: bool = True,
        scales: dict[str, float] | None = None,
        reconstruction: float = 0.0,
    ):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"Mi-CGA needs at least two modalities, got {list(dims)}")
        if out_dim < 1:
            raise ValueError("out_dim must be >= 1")
        if reconstruction < 0:
            raise ValueError(f"reconstruction weight must be >= 0, got {reconstruction}")
        if reconstruction > 0 and not feature_estimation:
            raise ValueError("reconstruction > 0 needs feature_estimation=True (it trains the estimator)")
        self.modalities = tuple(dims)
        self.out_dim = out_dim
        self.enc_dim = enc_dim
        self.encoder_dropout, self.gat_dropout = encoder_dropout, gat_dropout
        self.reconstruction = float(reconstruction)
        M, width = len(dims), enc_dim * len(dims)
        scales = {**PUBLIC_SCALES, **(scales or {})}
        self.register_buffer("scale", torch.tensor([scales.get(m, 1.0) for m in self.modalities]).repeat_interleave(
            enc_dim), persistent=False)
        self.encoders = nn.ModuleDict({m: nn.Linear(d, enc_dim) for m, d in dims.items()})
        self.context = BiRNN("lstm", width, context_hidden, num_layers=1)
        self.estimate = SymGraphConv(width, width) if feature_estimation else None
        self.decode = nn.Linear(width, width) if feature_estimation else None
        self.cross = CrossModalAttention(self.modalities, enc_dim, gat_out, heads) if cross_modal else None
        self.gat1 = GATv2Conv(width, gat_hidden, heads)
        self.gat2 = GATv2Conv(heads * gat_hidden, gat_out, heads)
        self.fused_dim = heads * gat_out * (2 if cross_modal else 1) + 2 * context_hidden
        self.fusion_head = nn.Linear(self.fused_dim, out_dim)

    @property
    def embed_dims(self) -> dict[str, int]:
        return {m: self.enc_dim for m in self.modalities}

    def forward(self, batch: Batch) -> BackboneOutput:
        valid, lengths = batch.valid, batch.lengths
        z = {m: self.encoders[m](batch.features[m][valid]) for m in self.modalities}
        u = dropout(torch.cat([z[m] for m in self.modalities], -1), self.encoder_dropout, self.training)
        B, T = valid.shape
        c = self.context(u.new_zeros(B, T, u.shape[-1]).index_put(valid.nonzero(as_tuple=True), u), lengths)[valid]
        src, dst = causal_edges(valid)
        est = u if self.estimate is None else 0.5 * (u + self.decode(self.estimate(u, src, dst)))
        h = F.normalize(est, p=1, dim=-1) * self.scale
        parts = [self._gat(h, src, dst), c]
        if self.cross is not None:
            parts.append(self.cross(h.view(h.shape[0], len(self.modalities), self.enc_dim)))
        fused = torch.cat(parts, -1)
        pred = self.fusion_head(fused)
        if self.out_dim == 1:
            pred = pred.squeeze(-1)
        aux = None
        if self.reconstruction > 0 and self.training:
            recon = dict(zip(self.modalities, est.split(self.enc_dim, -1)))
            observed = {m: batch.masks[m][valid] for m in self.modalities}
            aux = self.reconstruction * observed_reconstruction_loss(recon, z, observed)
        return BackboneOutput(prediction=pred, embeddings=z, fused=fused, aux_loss=aux)

    def _gat(self, h: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        g = self.gat1(h, src, dst)
        return self.gat2(dropout(g, self.gat_dropout, self.training), src, dst)
