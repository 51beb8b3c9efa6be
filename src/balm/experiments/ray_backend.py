"""Run sweep tasks as Ray tasks (optional extra ``ray``: ``pip install -e '.[ray]' in the balm clone``).

Each run is one remote call of the same function the local pool uses
(:func:`balm.experiments.workers.execute`), with ``num_cpus=1`` and one torch thread.
``address=None`` starts a local Ray instance with ``workers`` CPUs; otherwise the driver joins
the cluster at ``address`` (e.g. ``ray://head:10001`` or ``auto``), whose workers must have balm
installed and must see the sweep folder (a shared file system).
"""

from __future__ import annotations

from typing import Callable

from .config import ConfigError
from .workers import THREAD_ENV, execute

_ENV = {k: "1" for k in THREAD_ENV}


def require_ray():
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("the ray backend needs Ray: pip install -e '.[ray]' in the balm clone (or pip install ray)",
                          key="backend") from None
    return ray


def run_ray(tasks: list[dict], workers: int, address: str | None, on_done: Callable[[dict], None]) -> None:
    """Submit every task, report each result through ``on_done`` as it completes."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        kwargs = dict(address=address, include_dashboard=False, log_to_driver=False,
                      runtime_env={"env_vars": dict(_ENV)})
        if address is None:
            kwargs["num_cpus"] = max(1, workers)
        ray.init(**kwargs)
        started = True
    pending: list = []
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(execute)
        pending = [remote.remote(dict(t, single_thread=True)) for t in tasks]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            on_done(ray.get(ready[0]))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
