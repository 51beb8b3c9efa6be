"""The per-run task and the worker environment."""

import os

from balm.experiments.workers import THREAD_ENV, _single_thread_env, execute


def test_single_thread_env_is_restored(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with _single_thread_env():
        assert all(os.environ[k] == "1" for k in THREAD_ENV)
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ


def test_a_failing_run_is_reported_not_raised(tmp_path):
    res = execute({"id": "r1", "config": {"data": "synthetic:iemocap", "epochs": 0}, "run_dir": str(tmp_path / "r1")})
    assert res["status"] == "failed" and res["id"] == "r1" and "key 'epochs'" in res["error"]
    assert "ConfigError" in (tmp_path / "r1" / "error.txt").read_text()
