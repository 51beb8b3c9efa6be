"""A tiny user model and one backward pass, shared by the baseline rebalancers' tests."""

import torch
import torch.nn.functional as F
from torch import nn

DIMS = {"audio": 5, "text": 7, "visual": 3, "extra": 4}
EMB = 6
HIDDEN = 8


class TinyModel(nn.Module):
    def __init__(self, dims, out):
        super().__init__()
        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, EMB), nn.Tanh(), nn.Linear(EMB, EMB)) for m, d in dims.items()})
        self.fusion = nn.Linear(EMB * len(dims), HIDDEN)
        self.fusion_head = nn.Linear(HIDDEN, out)

    def forward(self, x):
        z = {m: enc(x[m]) for m, enc in self.encoders.items()}
        h = torch.relu(self.fusion(torch.cat(list(z.values()), -1)))
        return self.fusion_head(h), z


def make_setup(cls, M=3, task="classification", C=4, N=16, seed=0, **kw):
    """Model, rebalancer ``cls`` on its encoders, inputs, targets and availability masks."""
    torch.manual_seed(seed)
    dims = dict(list(DIMS.items())[:M])
    model = TinyModel(dims, C if task == "classification" else 1)
    rb = cls(model.encoders, {m: EMB for m in dims}, model.fusion_head, task=task, **kw)
    x = {m: torch.randn(N, d) for m, d in dims.items()}
    y = torch.randint(0, C, (N,)) if task == "classification" else torch.randn(N)
    masks = {m: torch.rand(N) > 0.3 for m in dims}
    return model, rb, x, y, masks


def backward(model, rb, x, y, task="classification"):
    model.zero_grad(set_to_none=True)
    pred, z = model(x)
    if task == "classification":
        loss = F.cross_entropy(pred, y)
    else:
        pred = pred.squeeze(-1)
        loss = F.mse_loss(pred, y)
    (loss + rb.alignment_loss()).backward()
    return pred, z
