"""Issue "Why" cases: run folders (ownership, failed reruns), resume, divergence, strict JSON, modes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from balm.cli.main import main
from balm.experiments.config import Config, ConfigError
from balm.experiments.trainer import train
from exp_helpers import base_config, write_yaml


class Killed(Exception):
    """Stands for SIGKILL after an epoch's checkpoint is on disk."""


def _kill_after(k):
    def hook(epoch):
        if epoch == k:
            raise Killed

    return hook


def _same(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return torch.equal(x, y)
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y))
    return x == y


def _timeless(res: dict) -> dict:
    return {k: v for k, v in res.items() if k not in ("epoch_seconds", "train_seconds")}


@pytest.mark.parametrize("method,kill_at", [("balm", 1), ("none", 0), ("ogm-ge", 2)])
def test_resume_after_a_kill_is_bit_identical(tiny_data, tmp_path, method, kill_at):
    cfg = Config.from_dict(base_config(tiny_data, method=method, epochs=4, seed=5, tsne_samples=20))
    full = train(cfg, tmp_path / "full", quiet=True)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "part", quiet=True, after_epoch=_kill_after(kill_at))
    assert not (tmp_path / "part").exists()  # nothing swapped in before the run ended
    assert (tmp_path / ".part.partial" / "last.pt").is_file()
    resumed = train(cfg, tmp_path / "part", quiet=True, resume=True)
    assert _timeless(resumed) == _timeless(full)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert _same(a, b)
    strip = lambda t: re.sub(r'"seconds":[0-9.e+-]+', "", t)  # noqa: E731
    assert strip((tmp_path / "part" / "stats.jsonl").read_text()) == strip((tmp_path / "full" / "stats.jsonl").read_text())
    assert not (tmp_path / "part" / "last.pt").exists() and not (tmp_path / ".part.partial").exists()


def test_resume_without_checkpoint_restores_rng(tiny_data, tmp_path):
    """The control: continuing from the saved model but a fresh RNG gives another result, so the
    identity above depends on the restored state."""
    from balm.experiments import runfolder

    cfg = Config.from_dict(base_config(tiny_data, method="balm", epochs=4, seed=5, tsne_samples=0))
    full = train(cfg, tmp_path / "full", quiet=True)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "part", quiet=True, after_epoch=_kill_after(1))
    last = runfolder.read_last(tmp_path / ".part.partial" / "last.pt")
    last["rng"]["numpy"] = __import__("numpy").random.default_rng(99).bit_generator.state
    runfolder.write_last(tmp_path / ".part.partial", {k: v for k, v in last.items() if k != "format"})
    other = train(cfg, tmp_path / "part", quiet=True, resume=True)
    k = last["epoch"] + 1  # the epochs before the checkpoint are kept, the later ones differ
    assert other["history"][:k] == full["history"][:k]
    assert other["history"][k:] != full["history"][k:]


def test_cli_resume_and_epoch_numbering(tiny_data, tmp_path, capsys, monkeypatch):
    cfg = write_yaml(tmp_path / "c.yaml", base_config(tiny_data, epochs=3, tsne_samples=0))
    out = tmp_path / "run"
    import balm.experiments.trainer as T

    real = T.train
    monkeypatch.setattr(T, "train", lambda *a, **k: real(*a, **k, after_epoch=_kill_after(0)))
    with pytest.raises(Killed):
        main(["train", "--config", str(cfg), "--out", str(out), "--quiet", "--debug"])
    monkeypatch.setattr(T, "train", real)
    assert main(["train", "--config", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 0
    res = json.loads((out / "result.json").read_text())
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"best epoch {res['best_epoch']} (of 0-2)")  # the console says what the JSON says
    assert [h["epoch"] for h in res["history"]] == [0, 1, 2]


def test_failed_rerun_keeps_the_earlier_result(tiny_data, tmp_path, capsys):
    cfg = write_yaml(tmp_path / "c.yaml", base_config(tiny_data, epochs=1, tsne_samples=0))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    # a rerun that fails at data loading (before: it had deleted result.json, checkpoint.pt, ...)
    assert main(["train", "--config", str(cfg), "--out", str(out), "--quiet", "--overwrite",
                 "--set", f"data={tmp_path}/nothing-here"]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # a rerun killed mid-way leaves it as well
    import balm.experiments.trainer as T

    with pytest.raises(Killed):
        T.train(Config.from_dict(base_config(tiny_data, epochs=2, tsne_samples=0)), out, quiet=True,
                after_epoch=_kill_after(0))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_no_silent_overwrite_and_foreign_folders_refused(tiny_data, tmp_path, capsys):
    cfg = write_yaml(tmp_path / "c.yaml", base_config(tiny_data, epochs=1, tsne_samples=0))
    foreign = tmp_path / "mine"
    (foreign / "tb").mkdir(parents=True)
    (foreign / "tb" / "notes.txt").write_text("my notes")
    (foreign / "result.json").write_text("{}")
    assert main(["train", "--config", str(cfg), "--out", str(foreign), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(foreign) in err and "balm did not write" in err and "Traceback" not in err
    assert (foreign / "tb" / "notes.txt").read_text() == "my notes"
    with pytest.raises(ConfigError, match="balm did not write"):
        train(Config.from_dict(base_config(tiny_data, epochs=1)), foreign, quiet=True)
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--quiet"]) == 0
    assert main(["train", "--config", str(cfg), "--out", str(run), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--out", str(run), "--quiet", "--overwrite"]) == 0
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "missing-target")
    assert main(["train", "--config", str(cfg), "--out", str(link), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_stale_partial_is_removed_by_the_next_run(tiny_data, tmp_path):
    cfg = Config.from_dict(base_config(tiny_data, epochs=2, tsne_samples=0))
    with pytest.raises(Killed):
        train(cfg, tmp_path / "r", quiet=True, after_epoch=_kill_after(0))
    assert (tmp_path / ".r.partial").exists()
    train(cfg, tmp_path / "r", quiet=True)  # no --resume: start again, leftovers removed
    assert not (tmp_path / ".r.partial").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


@pytest.mark.parametrize("change", [{"lr": 1e20, "grad_clip": None}, {"lr": float("nan")}])
def test_divergence_is_a_result_not_a_success(tiny_data, tmp_path, capsys, change):
    d = base_config(tiny_data, epochs=3, tsne_samples=0, **change)
    try:
        Config.from_dict(d)
    except ConfigError:
        pytest.skip("the config refuses this value")
    cfg = write_yaml(tmp_path / "c.yaml", d)
    out = tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--out", str(out), "--quiet"])
    text = (out / "result.json").read_text()
    res = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON token {c}"))
    assert rc == 3 and res["status"] == "diverged"
    assert res["test"] is None and isinstance(res["diverged"]["step"], int)
    assert "diverged at epoch" in capsys.readouterr().err
    for line in (out / "stats.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON token {c}"))


def test_features_near_float32_limit_diverge(tmp_path):
    from balm.data.native import save_dataset
    from exp_helpers import tiny_dataset
    from dataclasses import replace

    ds = tiny_dataset()
    ds = replace(ds, splits={k: replace(sp, features={m: x * 1e30 for m, x in sp.features.items()})
                             for k, sp in ds.splits.items()})
    with pytest.warns(UserWarning, match="overflow float32"):
        save_dataset(ds, tmp_path / "huge")
    cfg = Config.from_dict(base_config(str(tmp_path / "huge"), epochs=2, tsne_samples=0, grad_clip=None))
    res = train(cfg, tmp_path / "run", quiet=True)
    if res["status"] == "finished":  # a finished run must have finite metrics
        assert all(isinstance(v, float) for v in (res["test"]["acc"], res["test"]["wf1"]))
    else:
        assert res["status"] == "diverged"


def test_sweep_records_diverged_runs_and_report_lists_them_apart(tiny_data, tmp_path, capsys):
    sweep = base_config(tiny_data, epochs=1, tsne_samples=0, grad_clip=None)
    sweep["sweep"] = {"lr": [0.003, 1e20]}
    cfg = write_yaml(tmp_path / "s.yaml", sweep)
    out = tmp_path / "sw"
    assert main(["sweep", "--config", str(cfg), "--out", str(out), "--quiet"]) == 3
    assert "diverged:" in capsys.readouterr().err
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 2  # header + the finished run only
    assert main(["sweep", "--config", str(cfg), "--out", str(out), "--quiet"]) == 0  # done runs are not rerun
    assert "2 already done, 0 ran" in capsys.readouterr().out
    assert main(["report", str(out), "--tsne", "none", "--no-curves"]) == 0
    md = (out / "report" / "report.md").read_text()
    assert "diverged (not in any table)" in md and "1 finished runs" in md


def test_files_follow_the_umask(tiny_data, tmp_path):
    old = os.umask(0o022)
    try:
        cfg = Config.from_dict(base_config(tiny_data, epochs=1, tsne_samples=10))
        train(cfg, tmp_path / "run", quiet=True)
    finally:
        os.umask(old)
    for name in ("result.json", "checkpoint.pt", "tsne.npz", "stats.jsonl"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o755
    old = os.umask(0o077)
    try:
        from balm.io import atomic_write_text

        atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600


def test_strict_json_writes_null_for_non_finite(tmp_path):
    from balm.io import atomic_write_json, dumps_line

    atomic_write_json(tmp_path / "x.json", {"a": float("nan"), "b": [float("inf"), 1.5]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [None, 1.5]}
    assert dumps_line({"x": float("-inf")}) == '{"x":null}'


def test_killed_data_write_leftovers_are_cleaned_and_modes_follow_umask(tmp_path):
    from balm.data.native import save_dataset
    from exp_helpers import tiny_dataset

    target = tmp_path / "ds"
    (tmp_path / ".ds.partial").mkdir()  # what SIGKILL during `balm data convert` left
    (tmp_path / ".ds.partial" / "train.npz").write_bytes(b"half")
    old = os.umask(0o022)
    try:
        save_dataset(tiny_dataset(), target)
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert target.stat().st_mode & 0o777 == 0o755  # before: 0700 whatever the umask
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in target.iterdir() if p.is_file())
    # killed between the two renames of the swap: the old version is put back by the next write
    os.rename(target, tmp_path / ".ds.old")
    from balm.io import clean_stale

    clean_stale(target)
    assert (target / "meta.json").is_file() and not (tmp_path / ".ds.old").exists()


def test_stale_temporary_file_removed_by_the_next_write(tmp_path):
    from balm.io import atomic_write_text

    (tmp_path / ".result.json.abc123.tmp").write_text("half")
    atomic_write_text(tmp_path / "result.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
