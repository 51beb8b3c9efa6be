"""MMIN (Zhao, Li and Jin, ACL 2021): missing modality imagination network, trained in two stages
on incomplete data only (docs/baselines.md, "MMIN").

Utterance-level: every utterance is classified on its own (no dialogue context).
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from torch import nn

from ..data.batch import Batch
from .base import Backbone, BackboneOutput, Stage

STAGES = ("pretrain", "train")


def _widths(value, name: str) -> tuple[int, ...]:
    """A list of layer widths from a list/tuple of ints or a comma-separated string ("256,128,64")."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"{name} must be comma-separated integers, got {value!r}") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(w, int) and not isinstance(w, bool) for w in value):
        raise ValueError(f"{name} must be a list of positive integers, got {value!r}")
    if any(w < 1 for w in value):
        raise ValueError(f"{name} must be positive integers, got {list(value)}")
    return tuple(value)


class ResidualAutoencoder(nn.Module):
    """The cascaded residual autoencoder (CRA) of MMIN, B blocks of fully connected autoencoders.

    With Δ_0 = 0 and s_0 = h: block k reads s_k = s_{k−1} + Δ_{k−1}, encodes l_k = E_k(s_k)
    (Linear + LeakyReLU between layers, none after the last) and decodes Δ_k = D_k(l_k)
    (Linear + ReLU between layers, none after the last). Output r = T(s_B + Δ_B) with the
    transition T = Linear ∘ ReLU ∘ Linear (input width to input width) and the latent
    l = [l_1; …; l_B] (width B · layers[-1]).
    """

    def __init__(self, input_dim: int, layers: Sequence[int], blocks: int):
        super().__init__()
        if blocks < 1 or not layers:
            raise ValueError(f"the autoencoder needs >= 1 block and >= 1 layer, got {blocks} blocks, layers {layers}")
        widths = [input_dim, *layers]
        self.enc = nn.ModuleList()
        self.dec = nn.ModuleList()
        for _ in range(blocks):
            enc, dec = [], []
            for i in range(len(layers)):
                enc += [nn.Linear(widths[i], widths[i + 1]), nn.LeakyReLU()]
            back = widths[::-1]
            for i in range(len(layers)):
                dec += [nn.Linear(back[i], back[i + 1]), nn.ReLU()]
            self.enc.append(nn.Sequential(*enc[:-1]))
            self.dec.append(nn.Sequential(*dec[:-1]))
        self.transition = nn.Sequential(nn.Linear(input_dim, input_dim), nn.ReLU(), nn.Linear(input_dim, input_dim))
        self.latent_dim = blocks * layers[-1]

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, delta, latents = h, torch.zeros_like(h), []
        for enc, dec in zip(self.enc, self.dec):
            s = s + delta
            latent = enc(s)
            delta = dec(latent)
            latents.append(latent)
        return self.transition(s + delta), torch.cat(latents, -1)


class Classifier(nn.Module):
    """MMIN's fully connected classifier: ``body`` = (Linear → ReLU → Dropout) per hidden layer,
    then the final linear layer ``head``."""

    def __init__(self, input_dim: int, layers: Sequence[int], out_dim: int, dropout: float):
        super().__init__()
        body, width = [], input_dim
        for w in layers:
            body += [nn.Linear(width, w), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
            width = w
        self.body = nn.Sequential(*body)
        self.head = nn.Linear(width, out_dim)


def _subset_size_cdf(num_modalities: int) -> torch.Tensor:
    """cdf[k, s − 1] = P(|V| ≤ s) for V uniform over the non-empty subsets of a k-set (C(k, s) / (2^k − 1))."""
    cdf = torch.zeros(num_modalities + 1, num_modalities)
    for k in range(1, num_modalities + 1):
        total = 2**k - 1
        acc = 0
        for s in range(1, num_modalities + 1):
            acc += math.comb(k, s) if s <= k else 0
            cdf[k, s - 1] = acc / total
    return cdf


def sample_visible(observed: torch.Tensor, cdf: torch.Tensor | None = None) -> torch.Tensor:
    """V_i uniform over the non-empty subsets of the observed set O_i (empty when O_i is).

    observed: (N, M) bool. Draws the size |V_i| = s with probability C(k_i, s) / (2^k_i − 1)
    (k_i = |O_i|), then s of the observed modalities uniformly (the smallest random keys).
    Two ``torch.rand`` draws whatever the data, so the random stream depends on N and M only.
    """
    N, M = observed.shape
    if cdf is None:
        cdf = _subset_size_cdf(M)
    k = observed.sum(-1)
    u = torch.rand(N, device=observed.device)
    size = (1 + (u[:, None] >= cdf.to(observed.device)[k]).sum(-1)).minimum(k)
    keys = torch.rand(N, M, device=observed.device).masked_fill(~observed, 2.0)
    rank = keys.argsort(-1).argsort(-1)
    return observed & (rank < size[:, None])


class MMIN(Backbone):
    """MMIN on balm's protocol: two stages, ``pretrain`` then ``train``, on the incomplete split.

    Encoders φ^m (``encoders[m]``): z^m = e^m · Dropout(ReLU(W_m x^m + b_m)) (width ``embed_dim``),
    e^m the availability: a modality that is not there contributes exactly zero.
    h = [z^1; …; z^M].

    Stage ``pretrain`` (MMIN's full-modality fusion model, here on what is observed):
    ŷ = W_p g_p(h) (``pre_classifier``), trained on the task loss alone.

    Stage ``train``: the pretrained encoders are copied into a frozen teacher ψ^m. In training
    mode, each utterance shows a visible set V_i drawn uniformly from the non-empty subsets of its
    observed set O_i (:func:`sample_visible`; the hidden ones H_i = O_i \\ V_i are to be imagined):

        h_i = [v_i^m φ^m(x_i^m)]_m          r_i, l_i = CRA(h_i)        c_i = CRA'(r_i)
        t_i^m = 1[m ∈ H_i] ψ^m(x_i^m)        (the teacher's view of the hidden modalities)
        L_fwd = Σ_i Σ_{m ∈ O_i} ||r_i^m − t_i^m||² / (d Σ_i |O_i|)     (targets only where observed)
        L_cyc = Σ_i ||c_i − sg(h_i)||² / (N M d)
        aux_loss = mse_weight L_fwd + cycle_weight L_cyc;     ŷ_i = W g(l_i)  (``classifier``)

    In evaluation V_i = O_i. ``fusion_head`` is the final layer of the current stage's classifier
    and ``fused`` its input, so ``prediction == fusion_head(fused)`` in either stage.
    """

    def __init__(
        self,
        dims: dict[str, int],
        out_dim: int,
        embed_dim: int = 128,
        encoder_dropout: float = 0.0,
        ae_layers: Sequence[int] | str = (256, 128, 64),
        n_blocks: int = 5,
        cls_layers: Sequence[int] | str = (128, 128),
        dropout: float = 0.5,
        pretrain_dropout: float = 0.3,
        mse_weight: float = 4.0,
        cycle_weight: float = 2.0,
        share_weight: bool = False,
        pretrain_epochs: int = 20,
        pretrain_lr: float | None = 2e-4,
        train_lr: float | None = 2e-4,
    ):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"MMIN needs at least two modalities, got {list(dims)}")
        if out_dim < 1 or embed_dim < 1 or n_blocks < 1:
            raise ValueError("out_dim, embed_dim and n_blocks must be >= 1")
        rates = {"encoder_dropout": encoder_dropout, "dropout": dropout, "pretrain_dropout": pretrain_dropout}
        for name, p in rates.items():
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        if mse_weight < 0 or cycle_weight < 0:
            raise ValueError(f"mse_weight and cycle_weight must be >= 0, got {mse_weight}, {cycle_weight}")
        if not isinstance(pretrain_epochs, int) or isinstance(pretrain_epochs, bool) or pretrain_epochs < 0:
            raise ValueError(f"pretrain_epochs must be an integer >= 0, got {pretrain_epochs!r}")
        for name, lr in (("pretrain_lr", pretrain_lr), ("train_lr", train_lr)):
            if lr is not None and not lr > 0:
                raise ValueError(f"{name} must be > 0 or null (the config's lr), got {lr}")
        ae_layers = _widths(ae_layers, "ae_layers")
        cls_layers = _widths(cls_layers, "cls_layers")
        if not cls_layers:
            raise ValueError("cls_layers needs at least one hidden layer")
        self.modalities = tuple(dims)
        self.out_dim = out_dim
        self._embed_dim = embed_dim
        self.mse_weight, self.cycle_weight = float(mse_weight), float(cycle_weight)
        self.pretrain_epochs, self.pretrain_lr, self.train_lr = pretrain_epochs, pretrain_lr, train_lr

        def encoder(d):
            drop = [nn.Dropout(encoder_dropout)] if encoder_dropout else []
            return nn.Sequential(nn.Linear(d, embed_dim), nn.ReLU(), *drop)

        self.encoders = nn.ModuleDict({m: encoder(d) for m, d in dims.items()})
        width = embed_dim * len(dims)
        self.pre_classifier = Classifier(width, cls_layers, out_dim, pretrain_dropout)
        self.cra = ResidualAutoencoder(width, ae_layers, n_blocks)
        self.cra_back = self.cra if share_weight else ResidualAutoencoder(width, ae_layers, n_blocks)
        self.classifier = Classifier(self.cra.latent_dim, cls_layers, out_dim, dropout)
        self.teacher = copy.deepcopy(self.encoders)
        self.teacher.requires_grad_(False)
        # whether the teacher holds the encoders as they were when stage "train" began (saved with
        # the model, so that a resumed or reloaded run keeps its teacher)
        self.register_buffer("teacher_ready", torch.zeros((), dtype=torch.bool))
        self.register_buffer("_cdf", _subset_size_cdf(len(dims)), persistent=False)
        self._stage = "train"

    @property
    def embed_dims(self) -> dict[str, int]:
        return {m: self._embed_dim for m in self.modalities}

    @property
    def fusion_head(self) -> nn.Linear:
        return (self.pre_classifier if self._stage == "pretrain" else self.classifier).head

    @property
    def stage(self) -> str:
        return self._stage

    def stages(self) -> tuple[Stage, ...]:
        pre = (Stage("pretrain", epochs=self.pretrain_epochs, lr=self.pretrain_lr),) if self.pretrain_epochs else ()
        return pre + (Stage("train", epochs=None, lr=self.train_lr),)

    def set_stage(self, name: str) -> None:
        """``pretrain``: encoders and ``pre_classifier`` train. ``train``: the encoders are copied into
        the teacher (once: not again after a resume), then encoders, both CRAs and ``classifier`` train."""
        if name not in STAGES:
            raise ValueError(f"MMIN has the stages {list(STAGES)}, not {name!r}")
        self._stage = name
        pre = name == "pretrain"
        if pre:
            self.teacher_ready.fill_(False)
        elif not bool(self.teacher_ready):
            self.teacher.load_state_dict(self.encoders.state_dict())
            self.teacher_ready.fill_(True)
        self.encoders.requires_grad_(True)
        self.pre_classifier.requires_grad_(pre)
        for part in (self.cra, self.cra_back, self.classifier):
            part.requires_grad_(not pre)
        self.teacher.requires_grad_(False)

    def train(self, mode: bool = True) -> "MMIN":
        super().train(mode)
        self.teacher.eval()  # the teacher is a fixed function: no dropout
        return self

    def _encode(self, encoders: nn.ModuleDict, x: dict[str, torch.Tensor], keep: torch.Tensor) -> list[torch.Tensor]:
        """[keep^m · φ^m(x^m)]_m, reading x^m only where keep^m (the rest is zeroed first)."""
        out = []
        for j, m in enumerate(self.modalities):
            k = keep[:, j : j + 1]
            out.append(torch.where(k, encoders[m](torch.where(k, x[m], 0.0)), 0.0))
        return out

    def imagination_targets(
        self, x: dict[str, torch.Tensor], observed: torch.Tensor, visible: torch.Tensor
    ) -> torch.Tensor:
        """t = [1[m ∈ O \\ V] ψ^m(x^m)]_m, (N, M d): the teacher's encoding of the hidden modalities,
        zero in the visible slots; slots of missing modalities are zero and carry no loss."""
        with torch.no_grad():
            return torch.cat(self._encode(self.teacher, x, observed & ~visible), -1)

    def forward(self, batch: Batch) -> BackboneOutput:
        valid = batch.valid
        x = {m: batch.features[m][valid] for m in self.modalities}
        observed = torch.stack([batch.masks[m][valid] for m in self.modalities], -1)
        if self._stage == "pretrain":
            z = self._encode(self.encoders, x, observed)
            fused = self.pre_classifier.body(torch.cat(z, -1))
            return self._output(fused, z, None)
        visible = sample_visible(observed, self._cdf) if self.training else observed
        z = self._encode(self.encoders, x, visible)
        h = torch.cat(z, -1)
        imagined, latent = self.cra(h)
        fused = self.classifier.body(latent)
        aux = None
        if self.training:
            d = self._embed_dim
            target = self.imagination_targets(x, observed, visible)
            known = observed.repeat_interleave(d, -1)
            fwd = ((imagined - target) ** 2 * known).sum() / known.sum().clamp_min(1)
            cycle = ((self.cra_back(imagined)[0] - h.detach()) ** 2).mean()
            aux = self.mse_weight * fwd + self.cycle_weight * cycle
        return self._output(fused, z, aux)

    def _output(self, fused: torch.Tensor, z: list[torch.Tensor], aux) -> BackboneOutput:
        pred = self.fusion_head(fused)
        if self.out_dim == 1:
            pred = pred.squeeze(-1)
        return BackboneOutput(prediction=pred, embeddings=dict(zip(self.modalities, z)), fused=fused, aux_loss=aux)
