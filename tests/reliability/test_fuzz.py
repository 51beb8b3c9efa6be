"""Random bytes and mutations of valid files into the readers and the config loader, for a few
seconds under a memory limit: only clean errors (ValueError subclasses with a message), no
memory blow-up, and nothing left beside the inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("fuzz_readers.py")
SRC = str(Path(__file__).resolve().parents[2] / "src")
SECONDS = float(os.environ.get("BALM_FUZZ_SECONDS", "4"))
MEMORY = 2 << 30  # 2 GiB of address space for the fuzzing process


def test_readers_and_config_loader_fail_cleanly(tmp_path):
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(SCRIPT), str(SECONDS), "20261201", str(MEMORY), str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=SECONDS + 60)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["tried"] > 20  # thousands on an idle machine
    assert report["n_bad"] == 0, report["bad"][:5]
    left = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert left == [], left  # no temporary file or folder left by a reader
