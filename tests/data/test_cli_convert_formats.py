"""``balm data convert`` with the GCNet, MMIN and MMSA layouts (their options and errors)."""

import os
import re
import pickle

import numpy as np
import pytest

from balm.cli.main import main
from balm.data.native import load_dataset
from test_gcnet_reader import _mosi_like
from test_mmsa_reader import _mmsa_unaligned


def test_convert_gcnet_with_feature_folders(tmp_path, capsys):
    path, roots, obj, exp = _mosi_like(tmp_path)
    out = tmp_path / "native"
    args = ["data", "convert", str(path), "--out", str(out), "--feature", f"text={roots['text']}",
            "--feature", f"audio={roots['audio']}"]
    assert main(args) == 0
    ds = load_dataset(out)
    assert ds.modalities == ("text", "audio") and ds.metadata["format"] == "gcnet"
    u = obj[0]["v4"][0]
    np.testing.assert_allclose(ds["test"].features["audio"][0], exp["audio"][u].astype(np.float32), rtol=1e-6)
    assert "test 2 sequences / 3 utterances" in capsys.readouterr().out


def test_convert_gcnet_errors_exit_2_and_write_nothing(tmp_path, capsys):
    path, roots, obj, _ = _mosi_like(tmp_path, seed=2)
    out = tmp_path / "native"
    assert main(["data", "convert", str(path), "--out", str(out)]) == 2
    assert "--feature audio=DIR" in capsys.readouterr().err
    assert main(["data", "convert", str(path), "--out", str(out), "--feature", "audio"]) == 2
    assert "expected MODALITY=PATH" in capsys.readouterr().err
    os.remove(os.path.join(roots["audio"], obj[0]["v1"][2] + ".npy"))
    assert main(["data", "convert", str(path), "--out", str(out), "--feature", f"audio={roots['audio']}"]) == 2
    err = capsys.readouterr().err
    assert obj[0]["v1"][2] + ".npy" in err and "field 'audio'" in err
    assert not out.exists()


def test_convert_mmsa_options(tmp_path, capsys):
    obj, _ = _mmsa_unaligned(seed=3)
    src = tmp_path / "aligned_50.pkl"
    src.write_bytes(pickle.dumps(obj))
    out = tmp_path / "native"
    assert main(["data", "convert", str(src), "--out", str(out), "--pool", "none"]) == 2
    assert "cannot be kept as sequences" in capsys.readouterr().err and not out.exists()
    assert main(["data", "convert", str(src), "--out", str(out), "--label", "classification"]) == 0
    ds = load_dataset(out)
    assert ds.task == "classification" and ds.metadata["label_key"] == "classification_labels"
    assert main(["data", "convert", str(src), "--out", str(tmp_path / "x"), "--cv", "1"]) == 2
    assert "options ['cv'] do not apply to format 'mmsa'" in capsys.readouterr().err


def test_convert_mmin_fold(tmp_path, capsys):
    pytest.importorskip("h5py", reason="h5py (extra 'formats') is not installed")
    from test_mmin_reader import _build

    root, names, labels, _ = _build(tmp_path, folds=(1, 2))
    out = tmp_path / "native"
    assert main(["data", "convert", str(root), "--out", str(out)]) == 2
    assert "pass cv=" in capsys.readouterr().err
    assert main(["data", "convert", str(root), "--out", str(out), "--cv", "2", "--feature", "audio=A/comparE.h5"]) == 0
    ds = load_dataset(out)
    assert ds.modalities == ("audio",) and ds["dev"].sequence_ids == names["val"] and ds.metadata["cv"] == "2"
    np.testing.assert_array_equal(ds["test"].labels, labels["tst"])


def test_info_reads_the_gcnet_layout(tmp_path, capsys):
    path, roots, _, _ = _mosi_like(tmp_path, seed=4)
    args = ["data", "info", str(path)] + [a for m, r in roots.items() for a in ("--feature", f"{m}={r}")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "task regression" in text and "modalities: audio 5, text 4, visual 3" in text
    assert re.search(r"^train\s+2\s+5$", text, re.M) and re.search(r"^test\s+2\s+3$", text, re.M)
