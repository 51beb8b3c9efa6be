"""Where a sweep's runs execute: the per-run task and the local process pool.

:func:`execute` trains one run in its folder and never raises (a failed run must not stop the
sweep); the local pool (:func:`run_local`) and the Ray backend (:mod:`.ray_backend`) both run it.
Pool workers are spawned with one thread each (``OMP_NUM_THREADS=1`` and friends, one torch
thread) and exit when the sweep process dies.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
import traceback
from pathlib import Path
from typing import Callable


from .config import Config
from balm.io import atomic_write_json, atomic_write_text


def execute(task: dict) -> dict:
    """Train one run in ``task['run_dir']`` (used by the local pool and by Ray). Never raises."""
    import torch

    from .trainer import train

    if task.get("single_thread"):
        torch.set_num_threads(1)
    run_dir = Path(task["run_dir"])
    t0 = time.perf_counter()
    try:
        cfg = Config.from_dict(task["config"])
        # an interrupted run continues from its last epoch (resume); the folder appears when it ends
        res = train(cfg, run_dir, quiet=True, resume=True, overwrite=True)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
        try:  # a readable copy of config.json, when pyyaml is installed
            import yaml
        except ImportError:
            yaml = None
        if yaml is not None:
            atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if res["status"] == "diverged":
            return {"id": task["id"], "status": "diverged", "seconds": time.perf_counter() - t0,
                    "diverged": res["diverged"]}
        return {"id": task["id"], "status": "finished", "seconds": time.perf_counter() - t0,
                "test_acc": res["test"]["acc"], "test_wf1": res["test"]["wf1"]}
    except BaseException as exc:  # noqa: BLE001 - a failed run must not stop the sweep
        if isinstance(exc, KeyboardInterrupt):
            raise
        tb = traceback.format_exc()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "error.txt", tb)
        except OSError:
            pass
        return {"id": task["id"], "status": "failed", "seconds": time.perf_counter() - t0, "error": f"{type(exc).__name__}: {exc}"}


def _die_with_parent() -> None:
    """Make this worker exit when the sweep process dies (even by SIGKILL), so no orphan keeps
    writing into a run folder that a restarted sweep is about to clean."""
    parent = os.getppid()
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGKILL)) == 0:  # PR_SET_PDEATHSIG (Linux)
            if os.getppid() != parent:
                os._exit(1)
            return
    except (OSError, AttributeError):
        pass
    import threading

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    _die_with_parent()


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def _single_thread_env():
    saved = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update({k: "1" for k in THREAD_ENV})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_local(tasks: list[dict], workers: int, on_done: Callable[[dict], None]) -> None:
    """Run ``tasks`` in ``workers`` spawned single-threaded processes (in-process for 1).

    A worker that dies (killed, out of memory, cannot start) stops the sweep with an error
    instead of hanging; finished runs are kept and a rerun resumes.
    """
    if workers <= 1:
        for t in tasks:
            on_done(execute(t))
        return
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker)
    try:
        with _single_thread_env():  # workers are spawned while tasks are submitted
            pending = {pool.submit(execute, dict(t, single_thread=True)) for t in tasks}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                on_done(fut.result())
    except BaseException as exc:
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            if proc.is_alive():
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        if isinstance(exc, BrokenProcessPool):
            raise RuntimeError("a sweep worker process died (killed, out of memory, or it could not start); "
                               "finished runs are kept, run the sweep again to resume") from None
        raise
    pool.shutdown(wait=True)
