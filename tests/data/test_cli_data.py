import os
import pickle
import re

import numpy as np

from balm.cli.main import main
from balm.data.masks import apply_masks
from balm.data.native import load_dataset
from balm.masking import derive_seed, make_masks
from data_builders import build_balm_dict


def _rows(out: str) -> dict:
    """split -> (sequences, utterances) from the size table."""
    return {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"^(train|dev|test|total)\s+(\d+)\s+(\d+)$", out, re.M)}


def _rates(out: str) -> dict:
    return {m[0]: [float(m[1]), float(m[2]), float(m[3])]
            for m in re.findall(r"^\s+(train|dev|test)\s+audio ([\d.]+) text ([\d.]+) visual ([\d.]+)$", out, re.M)}


def test_convert_then_info(tmp_path, capsys):
    d = build_balm_dict(seed=1)
    src = tmp_path / "iemocap.pkl"
    src.write_bytes(pickle.dumps(d))
    out = tmp_path / "native"
    assert main(["data", "convert", str(src), "--format", "balm-pickle", "--out", str(out)]) == 0
    ds = load_dataset(out)
    assert ds["train"].num_utterances == 9 and ds.label_names[0] == "hap"
    np.testing.assert_array_equal(ds["test"].features["audio"], np.asarray(d["audio"]["t1"], np.float32))
    capsys.readouterr()
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert _rows(text) == {"train": (3, 9), "test": (1, 2), "total": (4, 11)}
    counts = np.bincount(ds["train"].labels, minlength=6)
    assert "labels train: " + " ".join(f"{n}={c}" for n, c in zip(ds.label_names, counts)) in text
    assert "modalities: audio 4, text 3, visual 2" in text and "masks: none stored" in text


def test_convert_refuses_bad_input_and_writes_nothing(tmp_path, capsys):
    d = build_balm_dict(seed=2)
    d["text"]["d2"][0] = np.full(3, np.inf)
    src = tmp_path / "bad.pkl"
    src.write_bytes(pickle.dumps(d))
    out = tmp_path / "native"
    assert main(["data", "convert", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.pkl" in err and "text['d2']" in err and "non-finite" in err
    assert sorted(os.listdir(tmp_path)) == ["bad.pkl"]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_convert_refuses_malicious_pickle(tmp_path, capsys):
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pkl"
    src.write_bytes(pickle.dumps({"text": _Payload(marker)}))
    assert main(["data", "convert", str(src), "--out", str(tmp_path / "native")]) == 2
    err = capsys.readouterr().err
    assert "evil.pkl" in err and "refused" in err
    assert not marker.exists() and not (tmp_path / "native").exists()


def test_synth_and_info_with_rates_and_dev(tmp_path, capsys):
    out = tmp_path / "iemo"
    assert main(["data", "synth", "--like", "iemocap", "--seed", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["data", "info", str(out), "--rates", "0.5", "0.7", "0.3", "--seed", "3", "--dev-ratio", "0.1"]) == 0
    text = capsys.readouterr().out
    rows = _rows(text)
    assert rows["train"][1] + rows["dev"][1] == 5810 and rows["test"] == (31, 1623)
    assert rows["train"][0] + rows["dev"][0] == 120 and rows["dev"][0] == 12
    # the printed realised rates are those of the masks drawn by the library with the same settings
    from balm.data.dev_split import ensure_dev

    ref = apply_masks(ensure_dev(load_dataset(out), 0.1, seed=3), (0.5, 0.7, 0.3), seed=3)
    got = _rates(text)
    for k, sp in ref.splits.items():
        np.testing.assert_allclose(got[k], 1 - sp.mask.mean(axis=0), atol=5e-5)
    assert "missing rates (target 0.5 0.7 0.3, seed 3, exact)" in text
    # nothing was written by info
    assert sorted(os.listdir(out)) == ["meta.json", "test.npz", "train.npz"]


def test_synth_stores_masks(tmp_path, capsys):
    out = tmp_path / "iemo"
    assert main(["data", "synth", "--like", "iemocap", "--seed", "1", "--out", str(out), "--rates", "0.3", "0.3", "0.6",
                 "--dev-ratio", "0.2"]) == 0
    ds = load_dataset(out)
    assert ds["dev"].num_sequences == 24
    for k in ("train", "dev", "test"):
        ref = make_masks(ds[k].num_utterances, (0.3, 0.3, 0.6), derive_seed(1, k), strategy="exact")
        np.testing.assert_array_equal(ds[k].mask, ref)
    capsys.readouterr()
    assert main(["data", "info", str(out)]) == 0
    got = _rates(capsys.readouterr().out)
    for k in ("train", "dev", "test"):
        np.testing.assert_allclose(got[k], 1 - ds[k].mask.mean(axis=0), atol=5e-5)


def test_info_on_regression_npz(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.round(rng.uniform(-3, 3, 40) * 3) / 3
    src = tmp_path / "scores.npz"
    np.savez(src, audio=rng.standard_normal((40, 2)), text=rng.standard_normal((40, 3)), labels=y,
             split=np.array(["train"] * 30 + ["test"] * 10))
    assert main(["data", "info", str(src)]) == 0
    text = capsys.readouterr().out
    t = y[30:].astype(np.float32)
    assert "task regression" in text
    assert (f"scores test: mean {t.mean():.3f} std {t.std():.3f} min {t.min():.3f} max {t.max():.3f} "
            f"positive {int((t > 0).sum())} negative {int((t < 0).sum())} zero {int((t == 0).sum())}") in text


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err
    assert main(["data", "info", "synthetic:iemocap", "--rates", "0.5", "0.5"]) == 2
    assert "expected 3 missing rates" in capsys.readouterr().err
