"""Sweeps: every run once, resume after SIGKILL, summary from result files, the Ray backend."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from balm.experiments.config import ConfigError
from balm.experiments.sweep import expand, load_sweep, run_sweep
from exp_helpers import base_config, write_yaml


def _sweep_dict(data, **sweep):
    return {**base_config(data, epochs=1, tsne_samples=0), "sweep": sweep or {"seed": [0, 1], "method": ["none", "balm"]}}


def _results(out: Path) -> dict:
    return {d.name: json.loads((d / "result.json").read_text()) for d in (out / "runs").iterdir() if (d / "result.json").exists()}


def test_sweep_runs_each_once_and_rerun_skips(tiny_data, tmp_path):
    sweep = expand(_sweep_dict(tiny_data))
    assert len(sweep.runs) == 4
    res = run_sweep(sweep, tmp_path, workers=2)
    assert res == {"total": 4, "skipped": 0, "ran": 4, "failed": [], "diverged": []}
    results = _results(tmp_path)
    assert sorted(results) == sorted(r.id for r in sweep.runs)
    for r in sweep.runs:
        assert results[r.id]["config"] == r.config.to_dict()
        assert (tmp_path / "runs" / r.id / "config.yaml").exists()
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert sorted(row["run_id"] for row in rows) == sorted(results)
    for row in rows:
        assert float(row["test_wf1"]) == pytest.approx(results[row["run_id"]]["test"]["wf1"])
    mtimes = {d.name: (d / "result.json").stat().st_mtime_ns for d in (tmp_path / "runs").iterdir()}
    again = run_sweep(expand(_sweep_dict(tiny_data)), tmp_path, workers=1)
    assert again["skipped"] == 4 and again["ran"] == 0
    assert mtimes == {d.name: (d / "result.json").stat().st_mtime_ns for d in (tmp_path / "runs").iterdir()}


def test_unfinished_run_folder_is_restarted(tiny_data, tmp_path):
    sweep = expand(_sweep_dict(tiny_data, seed=[0, 1]))
    run_sweep(sweep, tmp_path)
    first, second = (tmp_path / "runs" / r.id for r in sweep.runs)
    (second / "result.json").write_text("{ truncated")  # a corrupt result counts as unfinished
    (second / "stale.txt").write_text("left by a killed run")
    res = run_sweep(sweep, tmp_path)
    assert res["skipped"] == 1 and res["ran"] == 1
    assert not (second / "stale.txt").exists() and json.loads((second / "result.json").read_text())["status"] == "finished"


def test_runs_of_an_earlier_sweep_config_are_kept_on_disk_but_left_out(tiny_data, tmp_path):
    from balm.reporting.tables import load_results

    first = expand(_sweep_dict(tiny_data, seed=[0], method=["none", "balm"]))
    run_sweep(first, tmp_path)
    # the same sweep with balm at another setting: the none run keeps its id, balm gets a new one
    second = expand(_sweep_dict(tiny_data, seed=[0], cases={"none": {"method": "none"},
                                                            "balm": {"method": "balm", "noise": True}}))
    assert second.runs[0].id == first.runs[0].id and second.runs[1].id != first.runs[1].id
    said = []
    res = run_sweep(second, tmp_path, log=said.append)
    assert res["skipped"] == 1 and res["ran"] == 1
    assert any("1 folder(s)" in s and first.runs[1].id in s for s in said)
    assert (tmp_path / "runs" / first.runs[1].id / "result.json").exists()  # nothing deleted
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert sorted(r["run_id"] for r in rows) == sorted(r.id for r in second.runs)
    runs = load_results(tmp_path)
    assert [r.run_id for r in runs] == [r.id for r in second.runs]
    assert runs[1].config["noise"] is True and runs[1].model == "late_fusion+balm"
    from balm.reporting.report import make_report

    rep = make_report(tmp_path, tsne="none", curves=False)
    assert rep["runs"] == 2 and "1 folder(s) under runs/ outside the current sweep plan" in rep["markdown"].read_text()


def _finished(out):
    """result.json of finished runs: a run writes its folder as ``.<id>.partial`` and renames it when
    done, so a result.json inside a ``.partial`` folder is a run killed before its rename."""
    return [p for p in out.glob("runs/*/result.json") if not p.parent.name.startswith(".")]


def test_sigkill_mid_sweep_then_rerun_completes_each_run_once(tiny_data, tmp_path):
    cfg = write_yaml(tmp_path / "sweep.yaml", {**base_config(tiny_data, epochs=25, tsne_samples=0),
                                                "sweep": {"seed": [0, 1, 2, 3]}})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "balm.cli.main", "sweep", "--config", str(cfg), "--out", str(out), "--quiet",
           "--workers", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if _finished(out):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the sweep finished before it could be killed: " + proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)  # the sweep process only; its pool workers must follow it
    proc.wait()
    time.sleep(0.3)
    finished_before = {p.parent.name: p.read_bytes() for p in _finished(out)}
    assert 1 <= len(finished_before) < 4
    time.sleep(2.0)  # orphaned workers (if any survived) would finish their runs meanwhile
    assert len(_finished(out)) == len(finished_before)
    subprocess.run(cmd[:-2], env=env, check=True, capture_output=True)
    sweep = load_sweep(cfg)
    runs = sorted(d.name for d in (out / "runs").iterdir())
    assert runs == sorted(r.id for r in sweep.runs)  # every run, no duplicate, no leftover folder
    for rid, content in finished_before.items():  # finished runs were kept, not redone
        assert (out / "runs" / rid / "result.json").read_bytes() == content
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert sorted(r["run_id"] for r in rows) == runs


def test_bad_sweep_fails_before_any_output(tiny_data, tmp_path):
    sweep = expand({**base_config(tiny_data), "sweep": {"rates": [[0.1, 0.2, 0.3], [0.1, 0.2]]}})
    with pytest.raises(ConfigError, match=r"key 'rates'.*expected 3 missing rates.*run rates=\[0.1, 0.2\]"):
        run_sweep(sweep, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_ray_backend_runs_the_sweep(tiny_data, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra (pip install -e '.[ray]' in the balm clone)")
    sweep = expand(_sweep_dict(tiny_data, seed=[0, 1]))
    res = run_sweep(sweep, tmp_path, workers=2, backend="ray")
    assert res["ran"] == 2 and not res["failed"]
    local = run_sweep(sweep, tmp_path / "local", workers=1)
    assert local["ran"] == 2
    for r in sweep.runs:  # the same run function: the same numbers as the local backend
        ray_res = json.loads((tmp_path / "runs" / r.id / "result.json").read_text())
        loc_res = json.loads((tmp_path / "local" / "runs" / r.id / "result.json").read_text())
        assert ray_res["test"] == loc_res["test"] and ray_res["history"] == loc_res["history"]


def test_unbuildable_run_fails_before_any_output(tiny_data, tmp_path):
    # GCNet refuses a single modality: caught by building the model during the checks
    sweep = expand({**base_config(tiny_data, backbone="gcnet", backbone_options={}),
                    "sweep": {"modalities": ["AL", "A"], "method": ["none"]}})
    with pytest.raises(ConfigError, match=r"cannot build gcnet.*\['audio'\].*(run modalities=\"A\")"):
        run_sweep(sweep, tmp_path / "never")
    assert not (tmp_path / "never").exists()
