"""Issue "Why" cases: bounded resources and clean failures (one line, exit 2, no traceback)."""

from __future__ import annotations

import io
import json
import re
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from balm.cli.main import main
from balm.data.errors import DataError
from balm.experiments.config import ConfigError, load_config
from exp_helpers import base_config, write_yaml

SRC = str(Path(__file__).resolve().parents[2] / "src")

LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def _one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_billion_laughs_refused_quickly(tmp_path, capsys):
    f = tmp_path / "laughs.yaml"
    f.write_text(LAUGHS)
    assert len(LAUGHS) < 600
    import time

    t0 = time.perf_counter()
    assert main(["train", "--config", str(f), "--out", str(tmp_path / "o")]) == 2
    assert time.perf_counter() - t0 < 5  # before: 46 s and 4 GB, then MemoryError
    _one_line_error(capsys.readouterr().err, str(f), "aliases")
    with pytest.raises(ConfigError):
        main(["train", "--set", f"backbone_options={LAUGHS.replace(chr(10), ', ')}"]) if False else load_config(f)


def test_few_aliases_still_read(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text("data: synthetic:iemocap\nbackbone_options: &bo {hidden: 8}\nmethod_options: {}\n")
    assert load_config(f).backbone_options == {"hidden": 8}


@pytest.mark.parametrize("key,value,expect", [("threads", 100000, "<= 1024"), ("d_global", 10**9, "<= 65536"),
                                              ("backbone_options.hidden", 10**8, "between 1 and 65536")])
def test_documented_upper_bounds(key, value, expect, capsys, tmp_path):
    assert main(["train", "--set", "data=synthetic:iemocap", "--set", f"{key}={value}", "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys.readouterr().err, key.split(".")[-1], expect)
    assert not (tmp_path / "o").exists()


def test_sweep_size_needs_max_runs(tiny_data, tmp_path, capsys):
    d = base_config(tiny_data)
    d["sweep"] = {"seed": 1000, "lr": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]}
    f = write_yaml(tmp_path / "s.yaml", d)
    import time

    t0 = time.perf_counter()
    assert main(["sweep", "--config", str(f), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert time.perf_counter() - t0 < 5
    _one_line_error(capsys.readouterr().err, "10000 runs", "--max-runs")


def test_pickle_declaring_a_huge_allocation(tmp_path):
    class Huge:
        def __reduce__(self):
            return (bytearray, (10 ** 11,))

    f = tmp_path / "huge.pkl"
    f.write_bytes(pickle.dumps(Huge(), protocol=2))
    assert f.stat().st_size < 64
    from balm.data.safe_pickle import safe_load

    with pytest.raises(DataError, match="refusing to allocate") as exc:
        safe_load(f)
    assert str(f) in str(exc.value)


def test_npz_header_claiming_298_gib(tmp_path):
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": "<f8", "fortran_order": False, "shape": (40_000_000, 1000)})
    f = tmp_path / "big.npz"
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("audio.npy", b.getvalue() + b"\0" * 64)
        z.writestr("labels.npy", b"")
    from balm.data.npz_reader import read_arrays

    with pytest.raises(DataError, match="declares shape") as exc:
        read_arrays(str(f))
    assert str(f) in str(exc.value)


def _damaged_sweep(tiny_data, tmp_path):
    d = base_config(tiny_data, epochs=1, tsne_samples=10)
    d["sweep"] = {"seed": 4}
    f = write_yaml(tmp_path / "s.yaml", d)
    out = tmp_path / "sw"
    assert main(["sweep", "--config", str(f), "--out", str(out), "--quiet"]) == 0
    runs = sorted(p for p in (out / "runs").iterdir() if p.is_dir())
    res = json.loads((runs[0] / "result.json").read_text())
    del res["dev"]
    (runs[0] / "result.json").write_text(json.dumps(res))  # a missing dev (before: "error: 'dev'")
    res = json.loads((runs[1] / "result.json").read_text())
    res["test"]["acc"] = 2.2
    (runs[1] / "result.json").write_text(json.dumps(res))  # before: 220 % in a table
    (runs[2] / "tsne.npz").write_bytes((runs[2] / "tsne.npz").read_bytes()[:50])  # truncated
    stats = (runs[3] / "stats.jsonl").read_text()
    (runs[3] / "stats.jsonl").write_text(stats[: len(stats) // 2])
    return f, out, runs


def test_report_skips_damaged_results_and_keeps_going(tiny_data, tmp_path, capsys):
    _, out, runs = _damaged_sweep(tiny_data, tmp_path)
    assert main(["report", str(out), "--tsne", "all"]) == 0
    err = capsys.readouterr().err
    assert str(runs[0] / "result.json") in err and "'dev'" in err
    assert str(runs[1] / "result.json") in err and "test.acc = 2.2" in err
    assert "planned run(s) have no result" in err
    md = (out / "report" / "report.md").read_text()
    # the 220 % accuracy is in no table cell (paths in the report may contain any digits)
    assert "2 finished runs" in md and not re.search(r"\| 220\.00|220\.00 ±", md)
    assert (out / "report" / "table.csv").exists() and not (out / ".report.partial").exists()


def test_report_failure_keeps_the_old_report(tiny_data, tmp_path, capsys):
    _, out, runs = _damaged_sweep(tiny_data, tmp_path)
    assert main(["report", str(out), "--tsne", "none"]) == 0
    before = (out / "report" / "report.md").read_text()
    for r in runs:
        (r / "result.json").write_text("[]")
    assert main(["report", str(out)]) == 2
    assert (out / "report" / "report.md").read_text() == before


def test_sweep_resume_reruns_damaged_results(tiny_data, tmp_path, capsys):
    f, out, runs = _damaged_sweep(tiny_data, tmp_path)
    assert main(["sweep", "--config", str(f), "--out", str(out), "--quiet"]) == 0
    assert "2 already done, 2 ran" in capsys.readouterr().out


def test_cuda_without_cuda_and_bad_device(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["train", "--set", "data=synthetic:iemocap", "--set", "device=cuda", "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys.readouterr().err, "device", "CUDA is not available")


def test_read_only_output_is_one_line(tiny_data, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        cfg = write_yaml(tmp_path / "c.yaml", base_config(tiny_data, epochs=1))
        assert main(["train", "--config", str(cfg), "--out", str(ro / "run"), "--quiet"]) == 2
        _one_line_error(capsys.readouterr().err, "Permission denied")
    finally:
        ro.chmod(0o755)


def _cli(*args, env=None, **kw):
    e = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "balm.cli.main", *args], capture_output=True, text=True, env=e, **kw)


def test_version_debug_and_exit_codes(tmp_path):
    import balm

    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"balm {balm.__version__}"
    r = _cli("train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "none.yaml" in r.stderr
    r = _cli("train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o"), "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr
    r = _cli("train", "--config", str(tmp_path / "none.yaml"), env={"BALM_DEBUG": "1"})
    assert "Traceback" in r.stderr


def test_ctrl_c_is_one_line_and_130(monkeypatch, capsys):
    import balm.cli.train as T

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "run", interrupted)
    assert main(["train", "--list-keys"]) == 130
    _one_line_error(capsys.readouterr().err, "interrupted")


def test_broken_pipe_is_quiet(tmp_path):
    e = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    p = subprocess.Popen(f"{sys.executable} -m balm.cli.main train --list-keys | head -1", shell=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    out, err = p.communicate(timeout=60)
    assert len(out.splitlines()) == 1
    assert "BrokenPipeError" not in err and "Traceback" not in err


def _npz(tmp_path, labels, speakers):
    n = len(labels)
    f = tmp_path / "d.npz"
    np.savez(f, labels=np.asarray(labels), audio=np.ones((n, 2), np.float32), text=np.ones((n, 3), np.float32),
             split=np.array(["train"] * (n - 2) + ["test"] * 2), dialogue=np.arange(n) // 2, speaker=np.asarray(speakers))
    return f


def test_a_stray_label_is_an_error_not_a_billion_classes(tmp_path):
    from balm.data.npz_reader import read_npz

    f = _npz(tmp_path, [0, 1, 2, 0, 1, 10 ** 9], [0, 1] * 3)
    with pytest.raises(DataError, match="not a dense range") as exc:
        read_npz(f)
    assert "1000000000" in str(exc.value) and str(f) in str(exc.value)
    assert read_npz(_npz(tmp_path, [0, 1, 2, 0, 1, 2], [0, 1] * 3)).num_classes == 3


def test_raw_speaker_ids_are_renumbered(tmp_path):
    from balm.data.npz_reader import read_npz

    ds = read_npz(_npz(tmp_path, [0, 1, 2, 0, 1, 2], [1000, 1003, 1000, 1003, 1003, 997]))
    got = np.concatenate([sp.speakers for sp in ds.splits.values()])
    assert sorted(set(got.tolist())) == [0, 1, 2]  # 997 -> 0, 1000 -> 1, 1003 -> 2
    assert got.tolist() == [1, 2, 1, 2, 2, 0]


@pytest.mark.parametrize("code, text", [(28, "No space left on device"), (30, "Read-only file system")])
def test_full_or_read_only_disk_is_one_line_and_keeps_the_earlier_run(tiny_data, tmp_path, capsys, monkeypatch,
                                                                       code, text):
    """ENOSPC / EROFS when the result is written (root ignores permissions, so the failure is
    injected where a full or read-only disk would raise it): one line, exit 2, the finished run in
    DIR byte-identical."""
    import balm.experiments.trainer as T

    cfg = write_yaml(tmp_path / "c.yaml", base_config(tiny_data, epochs=1))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()

    def full(path, obj):
        raise OSError(code, text, str(path))

    monkeypatch.setattr(T, "atomic_write_json", full)
    assert main(["train", "--config", str(cfg), "--out", str(out), "--quiet", "--overwrite"]) == 2
    _one_line_error(capsys.readouterr().err, text, "result.json")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_bad_backbone_options_type_is_one_line(tiny_data, tmp_path, capsys):
    cfg = write_yaml(tmp_path / "c.yaml", base_config(tiny_data, epochs=1))
    assert main(["train", "--config", str(cfg), "--set", "backbone_options=3", "--out", str(tmp_path / "a")]) == 2
    _one_line_error(capsys.readouterr().err, "backbone_options", "mapping")
    assert main(["train", "--config", str(cfg), "--set", "backbone_options.hidden=wide",
                 "--out", str(tmp_path / "b")]) == 2
    _one_line_error(capsys.readouterr().err, "backbone_options")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
