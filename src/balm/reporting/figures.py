"""Figures of a sweep (matplotlib, Agg backend, PNG).

- :func:`modulation_curves`: per-modality KL(ŷ ‖ ŷ^m), cos(W_2^m, W_pred) and μ^m over training
  steps, averaged over the runs (seeds) of one model and setting (Fig. 1, 11–22).
- :func:`tsne_figure`: t-SNE of calibrated inputs x̂ (modalities concatenated), encoder outputs
  z (concatenated) and fused features h of a test subsample, coloured by label (Fig. 8–10).
- :func:`lemma1_figure`: each modality's mean encoder gradient norm against its availability
  1 − r_m (realised on the training split) across runs, with the least-squares line per
  modality (Lemma 1, Eq. 33: E‖∇_{φ^m}‖ grows linearly with 1 − r_m).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

CURVE_STATS = (("kl", "KL(ŷ ‖ ŷ^m)"), ("cos", "cos(W₂^m, W_pred)"), ("mu", "μ^m"))


def _plt():
    from balm.features.deps import require

    matplotlib = require("matplotlib", extra="experiments", purpose="drawing figures")

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def read_steps(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                rec = json.loads(line)
                if rec.get("kind") == "step":
                    out.append(rec)
    return out


def curve_arrays(step_files: Sequence[Path]) -> dict[str, dict[str, np.ndarray]] | None:
    """stat -> modality -> (steps,) mean over the given runs (truncated to the shortest run)."""
    runs = [read_steps(p) for p in step_files]
    runs = [r for r in runs if r and "kl" in r[0]]
    if not runs:
        return None
    n = min(len(r) for r in runs)
    mods = list(runs[0][0]["kl"])
    out = {}
    for stat, _ in CURVE_STATS:
        if stat not in runs[0][0]:
            continue
        out[stat] = {m: np.mean([[rec[stat][m] for rec in r[:n]] for r in runs], axis=0) for m in mods}
    return out


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    if k <= 1 or y.size < k:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    head = c[1:k] / np.arange(1, k)
    return np.concatenate([head, (c[k:] - c[:-k]) / k])


def modulation_curves(step_files: Sequence[Path], out: Path, title: str) -> Path | None:
    arrays = curve_arrays(step_files)
    if arrays is None:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(arrays), figsize=(4.2 * len(arrays), 3.4), squeeze=False)
    for ax, (stat, label) in zip(axes[0], [c for c in CURVE_STATS if c[0] in arrays]):
        for m, y in arrays[stat].items():
            k = max(1, y.size // 50)
            ax.plot(np.arange(y.size), _smooth(y, k), label=m, lw=1.4)
        ax.set_title(label)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{title}  (mean of {len(step_files)} run(s))", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def tsne_embed(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (scikit-learn) of standardised rows of ``x``."""
    from balm.features.deps import require

    TSNE = require("sklearn.manifold", "scikit-learn", extra="experiments", purpose="the t-SNE figure").TSNE

    x = np.asarray(x, dtype=np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    perplexity = float(min(30.0, max(2.0, (x.shape[0] - 1) / 3)))
    kw = dict(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    try:
        tsne = TSNE(max_iter=500, **kw)
    except TypeError:  # scikit-learn < 1.5
        tsne = TSNE(n_iter=500, **kw)
    return tsne.fit_transform(x)


def tsne_figure(sample_file: Path, out: Path, title: str, label_names: Sequence[str] | None = None) -> Path | None:
    with np.load(sample_file) as z:
        data = {k: z[k] for k in z.files}
    mods = [str(m) for m in data.get("modalities", [])]
    if not mods or data["labels"].shape[0] < 5:
        return None
    labels = data["labels"]
    regression = labels.dtype.kind == "f"
    if regression:  # colour by sentiment sign, as in the binary protocol
        labels = np.where(labels > 0, 1, np.where(labels < 0, 0, -1))
        label_names = ["negative", "positive"]
    panels = [
        ("calibrated inputs x̂", np.concatenate([data[f"input_{m}"].astype(np.float32) for m in mods], 1)),
        ("encoder outputs z", np.concatenate([data[f"embed_{m}"] for m in mods], 1)),
        ("fused features h", data["fused"]),
    ]
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    cmap = plt.get_cmap("tab10")
    for ax, (name, x) in zip(axes, panels):
        y2 = tsne_embed(x)
        for c in np.unique(labels):
            sel = labels == c
            name_c = "neutral (0)" if c < 0 else (label_names[c] if label_names is not None and c < len(label_names) else str(c))
            ax.scatter(y2[sel, 0], y2[sel, 1], s=7, color=cmap(int(c) % 10) if c >= 0 else "0.6", label=name_c)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].legend(fontsize=7, markerscale=2, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def mean_encoder_grad_norms(stats_file: Path) -> dict[str, float]:
    """Modality -> mean over all training steps of its encoder's gradient norm (before modulation)."""
    steps = read_steps(stats_file)
    if not steps:
        return {}
    mods = list(steps[0]["encoder_grad_norm"])
    return {m: float(np.mean([s["encoder_grad_norm"][m] for s in steps])) for m in mods}


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y = a + b x``: (slope b, intercept a, r²)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    ss = ((y - y.mean()) ** 2).sum()
    return float(b), float(a), float(1 - (resid ** 2).sum() / ss) if ss > 0 else 1.0


def lemma1_points(runs) -> list[dict]:
    """One point per (run, modality): availability 1 − r_m (train, realised) and mean gradient norm."""
    pts = []
    for r in runs:
        norms = mean_encoder_grad_norms(r.path / "stats.jsonl") if (r.path / "stats.jsonl").exists() else {}
        realised = r.result["realised_rates"].get("train", {})
        for m, g in norms.items():
            pts.append({"run_id": r.run_id, "model": r.model, "modality": m,
                        "availability": 1.0 - realised.get(m, 0.0), "grad_norm": g})
    return pts


def lemma1_fits(points: list[dict]) -> list[dict]:
    fits = []
    for model in dict.fromkeys(p["model"] for p in points):
        for m in dict.fromkeys(p["modality"] for p in points if p["model"] == model):
            sel = [p for p in points if p["model"] == model and p["modality"] == m]
            x = np.array([p["availability"] for p in sel])
            y = np.array([p["grad_norm"] for p in sel])
            if np.unique(np.round(x, 9)).size < 2:
                continue
            b, a, r2 = fit_line(x, y)
            fits.append({"model": model, "modality": m, "slope": b, "intercept": a, "r2": r2, "points": len(sel)})
    return fits


def lemma1_figure(points: list[dict], fits: list[dict], model: str, out: Path) -> Path | None:
    sel = [p for p in points if p["model"] == model]
    mfits = {f["modality"]: f for f in fits if f["model"] == model}
    if not mfits:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.4, 4))
    cmap = plt.get_cmap("tab10")
    for i, m in enumerate(dict.fromkeys(p["modality"] for p in sel)):
        x = np.array([p["availability"] for p in sel if p["modality"] == m])
        y = np.array([p["grad_norm"] for p in sel if p["modality"] == m])
        label = m
        ax.scatter(x, y, s=18, color=cmap(i), alpha=0.8)
        if m in mfits:
            f = mfits[m]
            xs = np.linspace(x.min(), x.max(), 10)
            ax.plot(xs, f["intercept"] + f["slope"] * xs, color=cmap(i), lw=1.3)
            label = f"{m}: slope {f['slope']:.3g}, r² {f['r2']:.2f}"
        ax.plot([], [], color=cmap(i), marker="o", label=label)
    ax.set_xlabel("availability 1 − r_m (train, realised)")
    ax.set_ylabel("mean encoder gradient norm")
    ax.set_title(f"Lemma 1 — {model}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
