"""Sweeps: the cartesian product of lists of values over a base config, run resumably.

A sweep config is a train config plus a ``sweep:`` mapping from train keys (dotted keys reach
into ``backbone_options``) to a list of values or a named set (:data:`NAMED_SETS`); the special
axis ``cases`` maps case names to mappings of train-key overrides, for one-off combinations
(``balm`` with ``coefficients: raw``) that a product of lists cannot express. Every run
gets an id ``<readable prefix>-<hash>``, the hash being a stable digest of its fully resolved
config, and the folder ``DIR/runs/<id>/``. A run is done when its ``result.json`` (written
atomically, last) is present, valid and holds the same config with status ``finished`` or
``diverged``; done runs are skipped. A run builds its folder in ``DIR/runs/.<id>.partial`` and
keeps a last-epoch checkpoint there, so a sweep killed at any moment (even with SIGKILL) and
started again continues each unfinished run from its last completed epoch, loses no finished
run and duplicates none.
``DIR/summary.csv`` lists every finished run; it is rebuilt from the result files and replaced
atomically after each run finishes.

This module expands a sweep and drives it; the folder's files are read and written by
:mod:`.rundir`, and the runs execute in :mod:`.workers` (or :mod:`.ray_backend`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import (
    Config,
    ConfigError,
    _unknown,
    apply_overrides,
    canonical_mapping,
    parse_set,
    read_mapping,
)
from .rundir import CASES, RUNS, is_done, plan_run_dirs, short, write_plan, write_summary
from .workers import run_local

# Missing-rate settings are written as mappings so that the order (r_A, r_L, r_V) of the
# paper's tables never depends on a dataset's column order.
_AVL = ("audio", "text", "visual")


def _avl(a: float, l: float, v: float) -> dict[str, float]:
    return dict(zip(_AVL, (a, l, v)))


NAMED_SETS: dict[str, dict[str, list]] = {
    "rates": {
        # the 6 permutations of (0.3, 0.5, 0.7) over (r_A, r_L, r_V)
        "imr-permutations": [_avl(*p) for p in itertools.permutations((0.3, 0.5, 0.7))],
        # Tables 8-9: the six IMR settings, (r_A, r_L, r_V)
        "imr-table8": [_avl(*p) for p in ((0.5, 0.5, 0.7), (0.5, 0.7, 0.5), (0.7, 0.5, 0.5),
                                          (0.3, 0.5, 0.7), (0.5, 0.3, 0.7), (0.7, 0.5, 0.3))],
        # Table 7: Config A and Config B, (r_A, r_L, r_V)
        "table7": [_avl(0.5, 0.3, 0.7), _avl(0.5, 0.7, 0.3)],
        # shared missing rate 0.0 ... 0.7 (one number = the same rate for every modality)
        "smr": [round(0.1 * i, 1) for i in range(8)],
    },
    "modalities": {
        "subsets": ["A", "V", "L", "AV", "AL", "LV", "ALV"],
        "unimodal": ["A", "V", "L"],
        "multimodal": ["AV", "AL", "LV", "ALV"],
    },
    "tau": {"table7": [0.1, 0.4, 0.7, 1.0, 1.3]},
    "rho": {"table7": [1.0, 1.2, 1.4, 1.6, 1.8]},
    "method": {
        "all": ["none", "fcm-only", "grm-only", "balm", "balm-d", "balm-s", "balm-m"],
        "paper": ["none", "balm", "balm-d", "balm-s", "balm-m", "fcm-only"],
    },
}


@dataclass
class Run:
    id: str
    config: Config
    setting: dict  # swept key -> value of this run


@dataclass
class Sweep:
    base: dict
    axes: list[tuple[str, list]]
    runs: list[Run]
    source: str | None = None
    cases: dict[str, dict] = field(default_factory=dict)  # case name -> train-key overrides


# --------------------------------------------------------------------------- expansion


def _axis_values(key: str, value: Any, source: str | None) -> list:
    top = key.split(".")[0]
    if isinstance(value, str):
        sets = NAMED_SETS.get(top, {})
        if value not in sets:
            hint = f" named sets of {top!r}: {', '.join(sets)}" if sets else f" {top!r} has no named sets; give a list"
            raise ConfigError(f"unknown named set {value!r};{hint}", key=f"sweep.{key}", source=source)
        return list(sets[value])
    if top == "seed" and isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"a seed count must be >= 1, got {value}", key="sweep.seed", source=source)
        return list(range(value))
    if not isinstance(value, list) or not value:
        raise ConfigError(f"expected a non-empty list of values or a named set, got {value!r}", key=f"sweep.{key}",
                          source=source)
    return list(value)


_ABBREV = {"rates": "r", "seed": "s", "modalities": "m", "tau": "tau", "rho": "rho", "data": "", "backbone": "", "method": "",
           "cases": ""}

_CASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@-]*")  # FORM@POINT: a grid point of FORM (--select dev)


def _overlaps(a: str, b: str) -> bool:
    """Whether two (dotted) keys address the same value or one contains the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _cases(value: Any, valid: tuple[str, ...], source: str | None) -> dict[str, dict]:
    """Validate ``sweep.cases``: a mapping of case names to mappings of train-key overrides."""
    if not isinstance(value, dict) or not value:
        raise ConfigError("expected a non-empty mapping of case names to mappings of train-key overrides, "
                          f"e.g. {{balm-raw: {{method: balm, coefficients: raw}}}}, got {value!r}",
                          key=f"sweep.{CASES}", source=source)
    out = {}
    for name, overrides in value.items():
        if not isinstance(name, str) or not _CASE_NAME.fullmatch(name):
            raise ConfigError(f"a case name must be a string of letters, digits and . _ + - @ (starting with a letter "
                              f"or digit), got {name!r}", key=f"sweep.{CASES}", source=source)
        if overrides is None:
            overrides = {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"expected a mapping of train keys to values, got {overrides!r}",
                              key=f"sweep.{CASES}.{name}", source=source)
        overrides = canonical_mapping({str(k): v for k, v in overrides.items()}, source)
        for k in overrides:
            top = k.split(".")[0]
            if top not in valid:
                raise ConfigError(_unknown(top, valid), key=f"sweep.{CASES}.{name}.{k}", source=source)
        out[name] = overrides
    return out


def run_id(cfg: Config, setting: dict) -> str:
    """``<readable prefix>-<8 hex digits of the SHA-1 of the resolved config>``."""
    digest = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()[:8]
    parts = [f"{_ABBREV.get(k, k.split('.')[-1])}{short(v)}" for k, v in setting.items()]
    prefix = re.sub(r"[^A-Za-z0-9._+-]+", "_", "_".join(p for p in parts if p))[:80].strip("_.")
    return f"{prefix}-{digest}" if prefix else digest


MAX_RUNS = 1000  # a larger sweep needs an explicit max_runs (``balm sweep --max-runs N``)


def expand(data: dict, *, source: str | None = None, max_runs: int | None = None) -> Sweep:
    """Validate a sweep mapping and expand it into runs (every run config validated).

    The runs are the product of the axes in the order written (the last varies fastest). The
    ``cases`` axis contributes, per case, all of its overrides at its position; a key may not be
    both an axis and set by a case, and two cases may not give the same run config. A product
    over ``max_runs`` (default :data:`MAX_RUNS`) is refused before any run is built.
    """
    data = canonical_mapping(data, source)
    spec = data.pop("sweep", None)
    if not isinstance(spec, dict) or not spec:
        raise ConfigError("a sweep config needs a non-empty 'sweep:' mapping of keys to lists of values", key="sweep",
                          source=source)
    spec = canonical_mapping(spec, source)
    valid = Config.keys()
    for k in data:
        if k not in valid:
            raise ConfigError(_unknown(k, valid), key=k, source=source)
    axes, cases = [], {}
    for key, value in spec.items():
        if key == CASES:
            cases = _cases(value, valid, source)
            axes.append((CASES, list(cases)))
            continue
        top = str(key).split(".")[0]
        if top not in valid:
            raise ConfigError(_unknown(top, valid + (CASES,)), key=f"sweep.{key}", source=source)
        axes.append((str(key), _axis_values(str(key), value, source)))
    for name, overrides in cases.items():
        for k in overrides:
            for axis, _ in axes:
                if axis != CASES and _overlaps(k, axis):
                    raise ConfigError(f"{k!r} is set by case {name!r} and swept as axis {axis!r}; set it in one place",
                                      key=f"sweep.{CASES}.{name}.{k}", source=source)
    limit = MAX_RUNS if max_runs is None else max_runs
    size = math.prod(len(vals) for _, vals in axes)
    if size > limit:
        raise ConfigError(f"the sweep has {size} runs (the product of its axes' lengths: "
                          f"{' x '.join(str(len(v)) for _, v in axes)}), over the limit of {limit}; "
                          "pass --max-runs N to allow more", key="sweep", source=source)
    runs, seen = [], {}
    for combo in itertools.product(*[vals for _, vals in axes]):
        setting = {k: v for (k, _), v in zip(axes, combo)}
        overrides = []
        for k, v in setting.items():
            overrides += list(cases[v].items()) if k == CASES else [(k, v)]
        d = apply_overrides(data, overrides)
        where = ", ".join(f"{k}={json.dumps(v)}" for k, v in setting.items())
        try:
            cfg = Config.from_dict(d)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (run {where})", source=source) from None
        key = json.dumps(cfg.to_dict(), sort_keys=True)
        if key in seen:
            other = seen[key].get(CASES)
            if other is not None and other != setting.get(CASES):
                raise ConfigError(f"cases {other!r} and {setting[CASES]!r} give the same run config (run {where}); "
                                  "make them differ or drop one", key=f"sweep.{CASES}", source=source)
            continue  # two settings that resolve to the same config (e.g. 'A' and ['audio'])
        seen[key] = setting
        runs.append(Run(run_id(cfg, setting), cfg, setting))
    return Sweep(base=data, axes=axes, runs=runs, source=source, cases=cases)


def load_sweep(path: str | Path | None, overrides: list[str] | None = None, *, max_runs: int | None = None) -> Sweep:
    """Read a sweep file, apply ``--set`` overrides (``sweep.KEY=[...]`` changes an axis), expand."""
    data = read_mapping(path) if path else {}
    data = apply_overrides(data, parse_set(overrides), Config.keys() + ("sweep",))
    return expand(data, source=str(path) if path else None, max_runs=max_runs)


def check_runs(runs: list[Run], dataset_checker: Callable[[Config], None] | None = None, source: str | None = None) -> None:
    """Dataset-dependent checks of every run (rates count, modalities, loss) and one model build
    per distinct architecture, before any work."""
    from .model import check_buildable

    for run in runs:
        try:
            (dataset_checker or check_buildable)(run.config)
        except ConfigError as exc:
            where = ", ".join(f"{k}={json.dumps(v)}" for k, v in run.setting.items())
            raise ConfigError(f"{exc} (run {where})", source=source) from None


# --------------------------------------------------------------------------- driver


@contextlib.contextmanager
def _lock(sweep_dir: Path):
    """One sweep at a time per folder (released by the OS even when the process is killed)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fh = open(sweep_dir / ".lock", "w")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"another sweep is running in {sweep_dir}") from None
        yield
    finally:
        fh.close()


def run_sweep(
    sweep: Sweep,
    out_dir: str | Path,
    *,
    workers: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    log: Callable[[str], None] | None = None,
    check: bool = True,
) -> dict:
    """Run every unfinished run of ``sweep`` under ``out_dir``; returns counts and failures."""
    say = log or (lambda s: None)
    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown backend {backend!r}; valid: local, ray", key="backend")
    if backend == "ray":
        from .ray_backend import require_ray

        require_ray()
    if check:
        check_runs(sweep.runs, source=sweep.source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        runs_dir = out / RUNS
        runs_dir.mkdir(exist_ok=True)
        plan = {
            "source": sweep.source,
            "axes": [[k, v] for k, v in sweep.axes],
            "base": sweep.base,
            "runs": [{"id": r.id, "setting": r.setting} for r in sweep.runs],
        }
        if sweep.cases:
            plan["cases"] = sweep.cases
        write_plan(out, plan)
        outside = plan_run_dirs(out)[1]
        if outside:
            say(f"{len(outside)} folder(s) in {runs_dir} are not runs of this sweep config (e.g. {outside[0].name}); "
                "summary.csv and balm report leave them out")
        todo, done = [], 0
        for r in sweep.runs:
            d = runs_dir / r.id
            if is_done(d, r.config):
                done += 1
                continue
            if d.exists():  # a failed run's folder (error.txt): run it again
                shutil.rmtree(d)
            todo.append({"id": r.id, "config": r.config.to_dict(), "run_dir": str(d)})
        write_summary(out)
        say(f"{len(sweep.runs)} runs: {done} finished, {len(todo)} to run ({backend}, {workers} worker(s))")
        failed: list[dict] = []
        diverged: list[dict] = []
        counter = {"n": 0}

        def on_done(res: dict) -> None:
            counter["n"] += 1
            if res["status"] == "finished":
                write_summary(out)
                say(f"[{counter['n']}/{len(todo)}] {res['id']}  test acc {res['test_acc']:.4f}  "
                    f"w-f1 {res['test_wf1']:.4f}  ({res['seconds']:.1f}s)")
            elif res["status"] == "diverged":
                diverged.append(res)
                dv = res["diverged"]
                say(f"[{counter['n']}/{len(todo)}] {res['id']}  DIVERGED at epoch {dv['epoch']} step {dv['step']}: "
                    f"{dv['what']}")
            else:
                failed.append(res)
                say(f"[{counter['n']}/{len(todo)}] {res['id']}  FAILED: {res['error']}")

        if todo:
            if backend == "local":
                run_local(todo, workers, on_done)
            else:
                from .ray_backend import run_ray

                run_ray(todo, workers, ray_address, on_done)
        write_summary(out)
    return {"total": len(sweep.runs), "skipped": done, "ran": len(todo) - len(failed) - len(diverged), "failed": failed,
            "diverged": diverged}
