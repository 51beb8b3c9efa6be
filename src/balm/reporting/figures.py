"""Figures of a sweep (matplotlib, Agg backend, PNG). Every axis is labelled with its unit.

- :func:`modulation_curves`: per-modality KL(ŷ ‖ ŷ^m), cos(W_2^m, W_pred) and μ^m over training
  steps, averaged over the runs (seeds) of one model and setting (Fig. 1, 11–22), smoothed with
  the raw values' band; below, training loss, encoder gradient norms and dev W-F1 of the method
  next to the plain model (``none``) of the same setting.
- :func:`tsne_figure`: t-SNE of calibrated inputs x̂ (modalities concatenated), encoder outputs
  z (concatenated) and fused features h of a test subsample, coloured by class, marker by
  missing pattern (Fig. 8–10).
- :func:`lemma1_figure`: each modality's mean encoder gradient norm against its availability
  1 − r_m (realised on the training split) across runs, with the least-squares line per
  modality (Lemma 1, Eq. 33: E‖∇_{φ^m}‖ grows linearly with 1 − r_m), fitted only where the
  availability takes at least :data:`MIN_LEMMA1_LEVELS` distinct values.
- :func:`head_accuracy_figure`: dev accuracy of each unimodal head over the epochs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

# (stat, panel title, y-axis label with unit)
CURVE_STATS = (("kl", "KL(ŷ ‖ ŷ^m)", "KL divergence (nats)"),
               ("cos", "cos(W₂^m, W_pred)", "cosine similarity (unitless)"),
               ("mu", "μ^m", "modulation coefficient μ (× gradient)"))
# curves every model has, drawn for BALM next to the plain model of the same setting
SHARED_CURVES = (("loss", "training loss", "loss (nats; MSE for regression)"),
                 ("encoder_grad_norm", "encoder gradient norm", "‖∇φ^m L‖₂ before modulation"),
                 ("dev_wf1", "dev W-F1", "dev W-F1 (%)"))
MIN_LEMMA1_LEVELS = 3  # distinct availabilities a modality needs before a slope is fitted


def _plt():
    from balm.features.deps import require

    matplotlib = require("matplotlib", extra="experiments", purpose="drawing figures")

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def read_records(path: Path, kind: str = "step") -> list[dict]:
    """The ``stats.jsonl`` lines of one kind (``step`` or ``epoch``)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                rec = json.loads(line)
                if rec.get("kind") == kind:
                    out.append(rec)
    return out


def read_steps(path: Path) -> list[dict]:
    return read_records(path, "step")


def _series(runs: list[list[dict]], stat: str) -> dict[str, np.ndarray] | np.ndarray | None:
    """Mean over runs (truncated to the shortest) of one statistic: per modality for dict-valued
    statistics, one array otherwise."""
    runs = [r for r in runs if r and stat in r[0]]
    if not runs:
        return None
    n = min(len(r) for r in runs)
    first = runs[0][0][stat]
    if isinstance(first, dict):
        return {m: np.mean([[float(rec[stat][m]) for rec in r[:n]] for r in runs], axis=0) for m in first}
    return np.mean([[float(rec[stat]) for rec in r[:n]] for r in runs], axis=0)


def curve_arrays(step_files: Sequence[Path]) -> dict[str, dict[str, np.ndarray]] | None:
    """stat -> modality -> (steps,) mean over the given runs (truncated to the shortest run)."""
    runs = [read_steps(p) for p in step_files]
    runs = [r for r in runs if r and "kl" in r[0]]
    if not runs:
        return None
    out = {}
    for stat, *_ in CURVE_STATS:
        v = _series(runs, stat)
        if v is not None:
            out[stat] = v
    return out


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    """Trailing moving average over ``k`` points (the first k − 1 average what exists)."""
    if k <= 1 or y.size < k:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    head = c[1:k] / np.arange(1, k)
    return np.concatenate([head, (c[k:] - c[:-k]) / k])


def smooth_band(y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(moving average, moving minimum, moving maximum) of ``y`` over trailing windows of ``k``
    points: the smoothed curve and the band the raw values span around it."""
    y = np.asarray(y, float)
    if k <= 1 or y.size == 0:
        return y, y, y
    lo = np.array([y[max(0, i - k + 1): i + 1].min() for i in range(y.size)])
    hi = np.array([y[max(0, i - k + 1): i + 1].max() for i in range(y.size)])
    return _smooth(y, k), lo, hi


def _window(n: int) -> int:
    """Smoothing window: 1/20 of the steps, at least 3 (at most a third of them)."""
    return max(1, min(n // 3, max(3, n // 20)))


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _draw(ax, x, y, color, label, style="-", band=True):
    m, lo, hi = smooth_band(y, _window(len(y)))
    ax.plot(x, m, style, color=color, lw=1.4, label=label)
    if band and len(y) > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.15 if style == "-" else 0.08, lw=0)


def modulation_curves(step_files: Sequence[Path], out: Path, title: str,
                      plain_files: Sequence[Path] = (), method_name: str = "method") -> Path | None:
    """Top row: the method's per-modality KL, cosine and μ over training steps; bottom row (every
    model has them): training loss, encoder gradient norms and dev W-F1, the method (solid) next
    to the plain model of the same setting (dashed) when ``plain_files`` are given. Curves are
    means over the runs, smoothed by a trailing moving average over 1/20 of the steps (at least 3), with the
    band the raw values span in each window."""
    arrays = curve_arrays(step_files)
    if arrays is None:
        return None
    plt = _plt()
    top = [c for c in CURVE_STATS if c[0] in arrays]
    fig, axes = plt.subplots(2, max(len(top), len(SHARED_CURVES)), figsize=(4.4 * 3, 7.0), squeeze=False)
    cmap = plt.get_cmap("tab10")
    mods = list(arrays[top[0][0]])
    colour = {m: cmap(i) for i, m in enumerate(mods)}
    for ax, (stat, name, ylabel) in zip(axes[0], top):
        for m, y in arrays[stat].items():
            _draw(ax, np.arange(y.size), y, colour[m], m)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[0][len(top):]:
        ax.axis("off")
    sources = [("method", [read_steps(p) for p in step_files], [read_records(p, "epoch") for p in step_files], "-")]
    if plain_files:
        sources.append(("plain", [read_steps(p) for p in plain_files], [read_records(p, "epoch") for p in plain_files], "--"))
    for ax, (stat, name, ylabel) in zip(axes[1], SHARED_CURVES):
        for who, steps, epochs, style in sources:
            tag = method_name if who == "method" else "plain model (none)"
            if stat == "dev_wf1":
                y = _series(epochs, stat)
                if y is not None:
                    ax.plot(np.arange(y.size), 100 * y, style, marker="o", color="k" if who == "method" else "0.5",
                            label=tag)
                ax.set_xlabel("epoch (from 0)")
                _integer_epochs(ax)
                continue
            v = _series(steps, stat)
            if v is None:
                continue
            if isinstance(v, dict):
                for m, y in v.items():
                    _draw(ax, np.arange(y.size), y, colour.get(m, "k"), f"{m} ({who})", style, band=who == "method")
            else:
                _draw(ax, np.arange(v.size), v, "k" if who == "method" else "0.5", tag, style)
            ax.set_xlabel("training step")
        ax.set_title(name + (" — solid: method, dashed: plain model" if plain_files else ""), fontsize=9)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    k = _window(len(next(iter(arrays[top[0][0]].values()))))
    plain = f", plain model: mean of {len(plain_files)} run(s)" if plain_files else ", no plain-model run in this setting"
    fig.suptitle(f"{title}  (mean of {len(step_files)} run(s){plain}; lines: moving average over {k} step(s), "
                 f"bands: raw min–max in the window)", fontsize=9)
    return _save(fig, out)


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


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def tsne_figure(sample_file: Path, out: Path, title: str, label_names: Sequence[str] | None = None) -> Path | None:
    """Three t-SNE panels (calibrated inputs, encoder outputs, fused features) of the test
    subsample: colour = class (sign of the score for regression), marker = missing pattern
    (which modalities are present in the utterance)."""
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
    if all(f"mask_{m}" in data for m in mods):
        present = np.stack([data[f"mask_{m}"].astype(bool) for m in mods], 1)
        patterns = np.array(["+".join(m for m, on in zip(mods, row) if on) or "none present" for row in present])
    else:
        patterns = np.full(labels.shape[0], "all")
    pattern_names = sorted(dict.fromkeys(patterns.tolist()), key=lambda p: (-p.count("+"), p))
    panels = [
        ("calibrated inputs x̂ (modalities concatenated)", np.concatenate([data[f"input_{m}"].astype(np.float32) for m in mods], 1)),
        ("encoder outputs z (concatenated)", np.concatenate([data[f"embed_{m}"] for m in mods], 1)),
        ("fused features h", data["fused"]),
    ]
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8))
    cmap = plt.get_cmap("tab10")
    classes = np.unique(labels)

    def class_name(c):
        if c < 0:
            return "neutral (0)"
        return label_names[c] if label_names is not None and c < len(label_names) else str(c)

    for ax, (name, x) in zip(axes, panels):
        y2 = tsne_embed(x)
        for j, pat in enumerate(pattern_names):
            for c in classes:
                sel = (labels == c) & (patterns == pat)
                if sel.any():
                    ax.scatter(y2[sel, 0], y2[sel, 1], s=18, marker=MARKERS[j % len(MARKERS)], alpha=0.75,
                               color=cmap(int(c) % 10) if c >= 0 else "0.6", linewidths=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("t-SNE 1 (arbitrary units)")
        ax.set_ylabel("t-SNE 2 (arbitrary units)")
        ax.set_xticks([])
        ax.set_yticks([])
    from matplotlib.lines import Line2D

    by_class = [Line2D([], [], ls="", marker="o", color=cmap(int(c) % 10) if c >= 0 else "0.6", label=class_name(c))
                for c in classes]
    by_pattern = [Line2D([], [], ls="", marker=MARKERS[j % len(MARKERS)], color="0.3", label=f"{p} present")
                  for j, p in enumerate(pattern_names)]
    leg = axes[-1].legend(handles=by_class, title="class (colour)", fontsize=7, title_fontsize=7,
                          loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1].add_artist(leg)
    axes[-1].legend(handles=by_pattern, title="missing pattern (marker)", fontsize=7, title_fontsize=7,
                    loc="lower left", bbox_to_anchor=(1.01, 0.0))
    fig.suptitle(f"{title}  ({labels.shape[0]} test utterances)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
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
    """One point per (run, modality): availability 1 − r_m (train, realised) and mean gradient
    norm; only runs on every modality of their dataset (a subset run's encoders share the
    gradient with fewer modalities, which is another experiment)."""
    pts = []
    for r in runs:
        ds = r.result["dataset"]
        if list(ds.get("used_modalities", [])) != list(ds.get("modalities", [])):
            continue
        norms = mean_encoder_grad_norms(r.path / "stats.jsonl") if (r.path / "stats.jsonl").exists() else {}
        realised = r.result["realised_rates"].get("train", {})
        requested = r.result.get("requested_rates") or {}
        for m, g in norms.items():
            pts.append({"run_id": r.run_id, "model": r.model, "modality": m,
                        "availability": 1.0 - realised.get(m, 0.0), "grad_norm": g,
                        "requested_availability": 1.0 - requested[m] if m in requested else None})
    return pts


def availability_levels(points_or_x) -> int:
    """Distinct availability levels among a modality's points: the requested availabilities
    1 − r_m where the runs requested rates (realised rates of one request differ by a few
    utterances across seeds), otherwise the realised ones rounded to 0.001."""
    if len(points_or_x) and isinstance(points_or_x[0], dict):
        req = [p.get("requested_availability") for p in points_or_x]
        if all(v is not None for v in req):
            return int(np.unique(np.round(np.asarray(req, float), 9)).size)
        points_or_x = [p["availability"] for p in points_or_x]
    return int(np.unique(np.round(np.asarray(points_or_x, float), 3)).size)


def lemma1_fits(points: list[dict], min_levels: int = MIN_LEMMA1_LEVELS) -> list[dict]:
    """Least-squares slope per (model, modality), only where the modality's availability takes at
    least ``min_levels`` distinct levels (:func:`availability_levels`) across the runs (fewer
    give a line through clusters)."""
    fits = []
    for model in dict.fromkeys(p["model"] for p in points):
        for m in dict.fromkeys(p["modality"] for p in points if p["model"] == model):
            sel = [p for p in points if p["model"] == model and p["modality"] == m]
            x = np.array([p["availability"] for p in sel])
            y = np.array([p["grad_norm"] for p in sel])
            levels = availability_levels(sel)
            if levels < min_levels:
                continue
            b, a, r2 = fit_line(x, y)
            fits.append({"model": model, "modality": m, "slope": b, "intercept": a, "r2": r2, "points": len(sel),
                         "levels": levels})
    return fits


def lemma1_figure(points: list[dict], fits: list[dict], model: str, out: Path) -> Path | None:
    """Mean encoder gradient norm against availability per modality; the fitted line where
    :func:`lemma1_fits` fitted one, otherwise the points alone and a note saying why."""
    sel = [p for p in points if p["model"] == model]
    if not sel:
        return None
    mfits = {f["modality"]: f for f in fits if f["model"] == model}
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    cmap = plt.get_cmap("tab10")
    unfitted = []
    for i, m in enumerate(dict.fromkeys(p["modality"] for p in sel)):
        x = np.array([p["availability"] for p in sel if p["modality"] == m])
        y = np.array([p["grad_norm"] for p in sel if p["modality"] == m])
        ax.scatter(x, y, s=20, color=cmap(i), alpha=0.8)
        if m in mfits:
            f = mfits[m]
            xs = np.linspace(x.min(), x.max(), 10)
            ax.plot(xs, f["intercept"] + f["slope"] * xs, color=cmap(i), lw=1.3)
            label = f"{m}: slope {f['slope']:.3g}, r² {f['r2']:.2f} ({f['levels']} levels)"
        else:
            levels = availability_levels([p for p in sel if p["modality"] == m])
            label = f"{m}: no fit ({levels} availability level{'s' if levels != 1 else ''})"
            unfitted.append(m)
        ax.plot([], [], color=cmap(i), marker="o", ls="-" if m in mfits else "", label=label)
    ax.set_xlabel("availability 1 − r_m (training split, realised; fraction)")
    ax.set_ylabel("mean encoder gradient norm ‖∇φ^m L‖₂")
    note = (f"\nno slope for {', '.join(unfitted)}: a fit needs ≥ {MIN_LEMMA1_LEVELS} availability levels "
            "across the settings" if unfitted else "")
    ax.set_title(f"Lemma 1 — {model}{note}", fontsize=10 if not unfitted else 8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out)


def _save(fig, out: Path, dpi: int = 110) -> Path:
    """Lay out, write and close ``fig``; returns ``out``."""
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    _plt().close(fig)
    return out


def head_accuracy_curves(runs) -> dict[str, np.ndarray]:
    """Modality -> (runs, epochs) dev accuracy of its unimodal head (``history[].dev_head_acc``),
    truncated to the shortest run; empty when no run logged head accuracies."""
    hists = [[h["dev_head_acc"] for h in r.result.get("history", []) if h.get("dev_head_acc")] for r in runs]
    hists = [h for h in hists if h]
    if not hists:
        return {}
    n = min(len(h) for h in hists)
    return {m: np.array([[float(e[m]) for e in h[:n]] for h in hists]) for m in hists[0][0]}


def head_accuracy_figure(runs, out: Path, title: str) -> Path | None:
    """Dev accuracy (%) of each unimodal head per epoch: mean over the runs, band min–max."""
    curves = head_accuracy_curves(runs)
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    cmap = plt.get_cmap("tab10")
    for i, (m, a) in enumerate(curves.items()):
        x = np.arange(a.shape[1])  # epochs from 0, as everywhere
        ax.plot(x, 100 * np.nanmean(a, 0), marker="o", color=cmap(i), label=m)
        if a.shape[0] > 1:
            ax.fill_between(x, 100 * np.nanmin(a, 0), 100 * np.nanmax(a, 0), color=cmap(i), alpha=0.15, lw=0)
    n = next(iter(curves.values())).shape[0]
    ax.set_xlabel("epoch (from 0)")
    _integer_epochs(ax)
    ax.set_ylabel("unimodal head accuracy on dev (%)")
    ax.set_title(f"{title}\nmean of {n} run(s) over all settings, band: min–max over runs;\n"
                 "accuracy on the dev utterances where the modality is present", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)
