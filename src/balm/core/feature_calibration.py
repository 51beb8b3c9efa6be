"""Feature Calibration Module (FCM, docs/method.md §2)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from . import functional as BF


class FeatureCalibration(nn.Module):
    """Per-sequence multiplicative gates on each modality's input features (FCM).

    For each sequence b and modality m (padding and missing steps excluded)::

        s_b^m = Σ_t e_t^m x̃_t^m / (Σ_t e_t^m + 1e-8)          masked mean
        z_b   = ReLU(W_g [s_b^1; …; s_b^M] + b_g)               z_b ∈ R^{d_global}
        g_b^m = 2 · sigmoid(W_m z_b + c_m)                      gate around 1
        x̂_t^m = e_t^m · g_b^m ⊙ x̃_t^m                           exactly 0 where missing

    ``d_global`` defaults to ``Σ_m d_m // 4``. The M gate layers ``W_m`` are stored as one
    ``nn.Linear(d_global, Σ_m d_m)`` (row blocks in modality order) so the gates cost one matmul.
    ``last_gates[m]`` holds the (detached) gates ``g^m`` of the last call, (B, d_m).
    """

    def __init__(self, dims: Mapping[str, int], d_global: int | None = None):
        super().__init__()
        dims = dict(dims)
        if len(dims) < 1:
            raise ValueError("FeatureCalibration needs at least one modality in dims")
        for m, d in dims.items():
            if not isinstance(d, int) or isinstance(d, bool) or d < 1:
                raise ValueError(f"dims[{m!r}] must be a positive int, got {d!r}")
        total = sum(dims.values())
        if d_global is None:
            d_global = max(1, total // 4)
        if not isinstance(d_global, int) or d_global < 1:
            raise ValueError(f"d_global must be a positive int, got {d_global!r}")
        self.dims = dims
        self.modalities = tuple(dims)
        self.d_global = d_global
        self.squeeze = nn.Linear(total, d_global)  # W_g, b_g
        self.gates = nn.Linear(d_global, total)  # [W_1; …; W_M], [c_1; …; c_M]
        self.last_gates: dict[str, Tensor] = {}

    def extra_repr(self) -> str:
        return f"dims={self.dims}, d_global={self.d_global}"

    def forward(
        self,
        features: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        valid: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Calibrate ``features``; returns ``{m: x̂^m}`` with the input's shape.

        Sequential data: ``features[m]`` (B, T, d_m), ``masks[m]`` (B, T) bool (True = present),
        ``valid`` (B, T) bool (True = not padding). Non-sequential data: ``features[m]`` (B, d_m)
        and ``masks[m]`` (B,), each sample being its own sequence of length 1. A missing
        ``masks`` (or a modality absent from it) means "present wherever valid".

        Mixed layouts: a flat modality (B, d_m) next to (B, T, d) sequences is one vector per
        sequence b (e.g. a clip-level embedding beside frame or token sequences): its summary
        s_b^m is the vector itself (zero when ``masks[m][b]`` is False), its gate g_b^m comes from
        the same z_b, and it is returned flat; ``valid`` applies to the sequences only.
        """
        xs, es, _ = BF.as_sequences(features, masks, valid, self.dims, "FeatureCalibration", mixed=True)
        summary = torch.cat([BF.masked_mean(x, e) for x, e in zip(xs, es)], dim=-1)
        z = torch.relu(self.squeeze(summary))
        gates = BF.calibration_gate(self.gates(z)).split([self.dims[m] for m in self.modalities], dim=-1)
        out = {}
        self.last_gates = {}
        for m, x, e, g in zip(self.modalities, xs, es, gates):
            self.last_gates[m] = g.detach()
            y = BF.calibrate(x, g, e)
            out[m] = y.squeeze(1) if features[m].dim() == 2 else y
        return out
