"""A tiny user model and one backward pass, shared by the baseline rebalancers' tests."""

import numpy as np
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


def make_batch(dims, n_seq=6, length=6, task="classification", seed=0):
    """Dialogues whose label is decodable from the 'text' features, with random missing entries."""
    from balm.data.batch import collate
    from balm.data.dataset import Split

    rng = np.random.default_rng(seed)
    n = n_seq * length
    feats = {m: rng.normal(size=(n, d)).astype(np.float32) for m, d in dims.items()}
    score = feats["text"][:, 0] + 0.5 * feats["audio"][:, 1]
    labels = (score > 0).astype(np.int64) + (score > 1).astype(np.int64) if task == "classification" else score.astype(np.float32)
    mask = rng.random((n, len(dims))) > 0.2
    mask[:, list(dims).index("text")] = True
    split = Split(name="train", features=feats, labels=labels, speakers=np.zeros(n, np.int64),
                  lengths=np.full(n_seq, length, np.int64), sequence_ids=[f"d{i}" for i in range(n_seq)], mask=mask)
    return collate(split, range(n_seq))
