"""The experiment configuration: one validated dataclass, read from YAML/JSON and ``--set`` overrides.

Validation is strict and happens before any work: an unknown key is an error that suggests the
closest valid key, a value of the wrong type or out of range is an error naming the key, and
unknown backbones, methods or backbone options are errors listing the valid ones.
Checks that need the dataset (the number of modalities, the number of classes) are done by
:func:`balm.experiments.prepare.check_against_dataset`, before a run creates any output.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import math
import re
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from balm.errors import BalmError
from balm.masking.rates import check_rates

# Letter codes for modality subsets (the paper's tables): A = audio, V = visual, L = lexical/text.
MODALITY_LETTERS = {"A": "audio", "V": "visual", "L": "text", "T": "text"}
LOSSES = ("auto", "nll", "ce", "focal", "mse")
CLASS_WEIGHTS = ("none", "balanced", "inverse")
COEFFICIENTS = ("guarded", "raw", "floored")
OPTIMIZERS = ("adam", "adamw", "sgd", "adam-fused", "adamw-fused")


class ConfigError(BalmError):
    """A bad configuration; the message names the source, the key and what was expected."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None):
        super().__init__(message, key=key, source=source)


# --------------------------------------------------------------------------- YAML


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_LOADER = None
YAML_EXTRA = "pyyaml is not installed: pip install -e '.[experiments]' from the clone (or pip install pyyaml)"


def _yaml():
    """(yaml module, SafeLoader that also reads ``1e-3``-style floats), or None without pyyaml.

    YAML is optional: JSON configs, ``--set`` values written as JSON and every command that reads
    no YAML work with the core dependencies only.
    """
    global _LOADER
    try:
        import yaml
    except ImportError:
        return None
    if _LOADER is None:
        class _Loader(yaml.SafeLoader):
            pass

        _Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
        _LOADER = _Loader
    return yaml, _LOADER


MAX_YAML_NODES = 100_000  # a config's YAML, aliases expanded, may hold at most this many nodes


def _expanded_nodes(yaml, node, memo: dict[int, int]) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (shared nodes counted at
    each use, each computed once, so a "billion laughs" file is measured without expanding it)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_YAML_NODES + 1  # a node reached again while being measured (a recursive alias)
    n = 1
    if isinstance(node, yaml.SequenceNode):
        n += sum(_expanded_nodes(yaml, v, memo) for v in node.value)
    elif isinstance(node, yaml.MappingNode):
        n += sum(_expanded_nodes(yaml, k, memo) + _expanded_nodes(yaml, v, memo) for k, v in node.value)
    memo[key] = min(n, MAX_YAML_NODES + 1)
    return memo[key]


def load_yaml(text: str, source: str | None = None) -> Any:
    """YAML text as Python values, refusing documents that aliases expand beyond
    :data:`MAX_YAML_NODES` nodes before anything is built from them (needs pyyaml)."""
    y = _yaml()
    if y is None:
        raise ConfigError(f"a YAML config needs pyyaml: {YAML_EXTRA}; or write the config as JSON", source=source)
    yaml, loader_cls = y
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(yaml, node, {}) > MAX_YAML_NODES:
            raise ConfigError(f"the YAML expands (through aliases) to more than {MAX_YAML_NODES} values; "
                              "write the values out or use fewer nested aliases", source=source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_value(text: str) -> Any:
    """A ``--set`` value parsed as YAML (``0.3`` -> float, ``[a, b]`` -> list, ``none`` -> str).

    Without pyyaml, values are parsed as JSON (numbers, true/false, null, quoted strings, lists and
    mappings in JSON syntax) and anything else is a plain string; a value that looks like a YAML
    list or mapping is then an error naming the extra to install.
    """
    y = _yaml()
    if y is None:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            if text.strip()[:1] in "[{":
                raise ConfigError(f"cannot parse {text!r} without YAML ({YAML_EXTRA}); write it as JSON, "
                                  'e.g. {"audio": 0.5}') from None
            return text
    yaml, _ = y
    try:
        return load_yaml(text, "--set")
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"cannot parse value {text!r} as YAML: {exc}") from None


MAX_CONFIG_BYTES = 1 << 20  # 1 MiB
BASE_KEY = "base"  # a config file's key naming the file it inherits from


PACKAGE_PREFIX = "balm:"  # balm:iemocap/mmgcn.yaml = the config shipped with the package


def config_path(path: str | Path) -> Path:
    """``path``, or for ``balm:<name>`` the config ``<name>`` shipped inside the package (the
    repository's ``configs/`` folder, installed as package data ``balm/configs``)."""
    text = str(path)
    if not text.startswith(PACKAGE_PREFIX):
        return Path(path)
    name = text[len(PACKAGE_PREFIX):].lstrip("/")
    root = Path(__file__).resolve().parents[1] / "configs"
    found = root / name
    if not name or not found.is_file():
        shipped = sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml")) if root.is_dir() else []
        close = difflib.get_close_matches(name, shipped, n=1, cutoff=0.5)
        hint = f"; did you mean {PACKAGE_PREFIX}{close[0]}?" if close else ""
        raise ConfigError(f"no config {name!r} ships with the package{hint} ({len(shipped)} shipped, e.g. "
                          f"{PACKAGE_PREFIX}iemocap/mmgcn.yaml)", source=text)
    return found


def read_mapping(path: str | Path) -> dict:
    """Read a YAML (``.yaml``/``.yml``) or JSON (``.json``) file holding a mapping, with inheritance.

    A top-level ``base: other.yaml`` (a path relative to the file that names it) makes the file a
    child of ``other.yaml``: the result is the base's resolved mapping updated by the child's own
    keys at the top level only, so a key the child sets replaces the base's value whole (a
    child's ``backbone_options`` or ``sweep`` mapping is not merged into the base's). A base may
    have a base of its own; a cycle, a missing base file or a ``base`` that is not a path is an
    error naming the files. ``balm:iemocap/mmgcn.yaml`` names a config shipped with the package
    (:func:`config_path`); its bases resolve inside the package the same way.
    """
    return _read_chain(config_path(path), ())


def _read_chain(path: Path, children: tuple[Path, ...]) -> dict:
    """``path``'s mapping with its chain of bases applied; ``children`` are the files that led here."""
    data = _read_one(path)
    if BASE_KEY not in data:
        return data
    base = data.pop(BASE_KEY)
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"expected the path of a config file to inherit from, got {base!r} ({_tname(base)})",
                          key=BASE_KEY, source=str(path))
    base_path = path.parent / base
    chain = children + (path,)
    seen = {p.resolve() for p in chain}
    if base_path.resolve() in seen:
        loop = " -> ".join(str(p) for p in chain + (base_path,))
        raise ConfigError(f"inheritance cycle: {loop}", key=BASE_KEY, source=str(path))
    if not base_path.is_file():
        raise ConfigError(f"base config file not found: {base_path}", key=BASE_KEY, source=str(path))
    return {**_read_chain(base_path, chain), **data}


def _read_one(path: Path) -> dict:
    """One file's own mapping (no inheritance)."""
    if not path.is_file():
        raise ConfigError("config file not found", source=str(path))
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"is {path.stat().st_size} bytes; a config file may hold at most {MAX_CONFIG_BYTES}",
                          source=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"is not UTF-8 text ({exc.reason} at byte {exc.start})", source=str(path)) from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ConfigError(f"cannot parse: {' '.join(str(exc).split())}", source=str(path)) from None
    else:
        y = _yaml()
        if y is None:
            raise ConfigError(f"a YAML config needs pyyaml: {YAML_EXTRA}; or write the config as JSON",
                              source=str(path))
        try:
            data = load_yaml(text, str(path))
        except (y[0].YAMLError, RecursionError) as exc:
            raise ConfigError(f"cannot parse: {' '.join(str(exc).split())}", source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"must hold a mapping of keys to values, got {type(data).__name__}", source=str(path))
    return data


# --------------------------------------------------------------------------- value checks


def _tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(float(v))


MAX_THREADS = 1024  # torch CPU threads per process
MAX_WIDTH = 65_536  # any layer width: d_global, a backbone's hidden / embedding / fused sizes


def _int(lo: int | None = None, optional: bool = False, hi: int | None = None) -> Callable:
    def check(key: str, v: Any) -> Any:
        if v is None and optional:
            return None
        if not _is_int(v):
            raise ConfigError(f"expected an integer{' or null' if optional else ''}, got {v!r} ({_tname(v)})", key=key)
        if lo is not None and v < lo:
            raise ConfigError(f"expected an integer >= {lo}, got {v}", key=key)
        if hi is not None and v > hi:
            raise ConfigError(f"expected an integer <= {hi}, got {v}", key=key)
        return int(v)

    return check


def _float(lo: float | None = None, hi: float | None = None, lo_open=False, hi_open=False, optional=False) -> Callable:
    def check(key: str, v: Any) -> Any:
        if v is None and optional:
            return None
        if not _is_num(v):
            raise ConfigError(f"expected a number{' or null' if optional else ''}, got {v!r} ({_tname(v)})", key=key)
        v = float(v)
        bad = (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and (v >= hi if hi_open else v > hi))
        if bad:
            lb = "(" if lo_open else "["
            rb = ")" if hi_open else "]"
            raise ConfigError(f"expected a number in {lb}{lo if lo is not None else '-inf'}, "
                              f"{hi if hi is not None else 'inf'}{rb}, got {v}", key=key)
        return v

    return check


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"expected true or false, got {v!r} ({_tname(v)})", key=key)
    return v


def _choice(choices: tuple[str, ...] | Callable[[], tuple[str, ...]], what: str) -> Callable:
    def check(key: str, v: Any) -> str:
        valid = choices() if callable(choices) else choices
        if not isinstance(v, str):
            raise ConfigError(f"expected a string naming a {what} ({', '.join(valid)}), got {v!r} ({_tname(v)})", key=key)
        if v not in valid:
            close = difflib.get_close_matches(v, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown {what} {v!r}{hint} valid: {', '.join(valid)}", key=key)
        return v

    return check


def _backbones() -> tuple[str, ...]:
    from balm.backbones.registry import BACKBONES

    return tuple(BACKBONES)


def _backbone(key: str, v: Any) -> str:
    """A registered backbone name, or ``package.module:Class`` naming a backbone class."""
    from balm.backbones.registry import resolve_backbone

    if isinstance(v, str) and ":" in v:
        try:
            resolve_backbone(v)
        except (ValueError, TypeError) as exc:
            raise ConfigError(getattr(exc, "detail", str(exc)), key=key) from None
        return v
    return _choice(_backbones, "backbone")(key, v)


def _method(key: str, v: Any) -> str:
    """A registered method name, or ``package.module:Class`` naming a rebalancer class."""
    from balm.methods import get, names

    if isinstance(v, str) and ":" in v:
        try:
            get(v)
        except ValueError as exc:
            raise ConfigError(str(exc), key=key) from None
        return v
    return _choice(names, "method")(key, v)


def _strategies() -> tuple[str, ...]:
    from balm.masking import STRATEGIES

    return tuple(STRATEGIES)


def _data(key: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(
            f"expected a dataset directory path or 'synthetic:iemocap' / 'synthetic:mosei', got {v!r}", key=key
        )
    if v.startswith("synthetic:") and v.split(":", 1)[1].split("?")[0] not in ("iemocap", "mosei"):
        raise ConfigError(f"unknown synthetic dataset {v!r}; valid: synthetic:iemocap, synthetic:mosei", key=key)
    return v


def _rates(key: str, v: Any) -> Any:
    """null (keep stored masks), one number (shared rate), a list, or a mapping modality -> rate."""
    return check_rates(v, key=key, error=ConfigError)


def _modalities(key: str, v: Any) -> list[str] | None:
    """null (all), a list of names, or a string of letters (``"AL"``: audio and text)."""
    if v is None:
        return None
    if isinstance(v, str):
        letters = v.strip()
        if letters.upper() in ("ALL", ""):
            return None
        bad = [c for c in letters.upper() if c not in MODALITY_LETTERS]
        if bad:
            raise ConfigError(
                f"expected a list of modality names or letters from {sorted(MODALITY_LETTERS)} "
                f"(A=audio, V=visual, L=text), got {v!r}", key=key)
        names = [MODALITY_LETTERS[c] for c in letters.upper()]
    elif isinstance(v, (list, tuple)) and v and all(isinstance(m, str) and m for m in v):
        names = list(v)
    else:
        raise ConfigError(f"expected a non-empty list of modality names (or letters like 'AL'), got {v!r}", key=key)
    if len(set(names)) != len(names):
        raise ConfigError(f"modalities repeat: {names}", key=key)
    return names


def _class_weights(key: str, v: Any) -> Any:
    if isinstance(v, str):
        return _choice(CLASS_WEIGHTS, "class-weight scheme")(key, v)
    if isinstance(v, (list, tuple)) and v and all(_is_num(w) and w >= 0 for w in v):
        return [float(w) for w in v]
    raise ConfigError(f"expected one of {', '.join(CLASS_WEIGHTS)} or a list of non-negative numbers, got {v!r}", key=key)


def _mapping(key: str, v: Any) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise ConfigError(f"expected a mapping of option names to values, got {v!r} ({_tname(v)})", key=key)
    return dict(v)


def _device(key: str, v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
        raise ConfigError(f"expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {v!r}", key=key)
    return v


def _opt(check: Callable, doc: str, default: Any = MISSING, type_doc: str = "") -> Any:
    kw = {"default_factory": lambda: dict(default)} if isinstance(default, dict) else {"default": default}
    if default is MISSING:
        kw = {}
    return field(metadata={"check": check, "doc": doc, "type": type_doc}, **kw)


# --------------------------------------------------------------------------- the config


@dataclass
class Config:
    """Everything one training run needs; see docs/experiments.md for every key."""

    data: str = _opt(_data, "dataset: a native dataset directory or synthetic:iemocap | synthetic:mosei", type_doc="str")
    backbone: str = _opt(_backbone, "backbone: late_fusion, mmgcn, mmdfn, gcnet, or package.module:Class naming "
                         "your own (docs/backbones.md, examples/my_backbone.py)", "late_fusion", "str")
    backbone_options: dict = _opt(_mapping, "keyword arguments of the backbone's constructor", {}, "mapping")
    method: str = _opt(_method, "balancing method: a BALM variant (none, fcm-only, grm-only, balm, balm-d, balm-s, "
                       "balm-m), a baseline (ogm-ge, cggm, ada2i), a registered name or package.module:Class "
                       "(formerly 'variant')", "none", "str")
    method_options: dict = _opt(_mapping, "options of the chosen method beyond the keys below, e.g. {alpha: 0.1} for "
                                "ogm-ge / ada2i, {magnitude: 1.3, lam: 0.2} for cggm, {modulate: update} for any "
                                "(docs/plugin.md, docs/baselines.md); formerly 'variant_options'", {}, "mapping")
    rates: Any = _opt(_rates, "missing rates: one per dataset modality (list in dataset order or mapping name -> rate), "
                      "one number for a shared rate (SMR), or null to keep the dataset's stored masks", None,
                      "list | mapping | float | null")
    test_rates: Any = _opt(_rates, "missing rates of the test split only (same forms as rates); null = rates "
                           "(Table 10 trains incomplete and tests complete: test_rates: 0.0)", None, "list | mapping | float | null")
    modalities: Any = _opt(_modalities, "modalities used for training and evaluation (others are dropped after "
                           "masking); list of names or letters like 'AL'; null = all", None, "list | str | null")
    mask_strategy: str = _opt(_choice(_strategies, "mask strategy"), "missing-mask operator "
                             "strategy: exact (realised rates within 1/n of the request), paper (the supplement's "
                             "Eq. 36-38, low by Π r / M; the reproduction configs set it), reference", "exact", "str")
    mask_seed: Any = _opt(_int(0, optional=True), "seed of the masks and the dev split; null = seed", None, "int | null")
    seed: int = _opt(_int(0), "seed of initialisation, batch order and dropout", 0, "int")
    epochs: int = _opt(_int(1), "training epochs", 80, "int")
    batch_size: int = _opt(_int(1), "sequences (dialogues) per training batch", 16, "int")
    eval_batch_size: Any = _opt(_int(1, optional=True), "sequences per evaluation batch; null = 4 x batch_size", None, "int | null")
    optimizer: str = _opt(_choice(OPTIMIZERS, "optimizer"), "optimizer of backbone and FCM: adam, adamw (decoupled "
                          "weight decay), sgd (with momentum), or adam-fused / adamw-fused (torch's fused kernel: "
                          "faster, results not bit-identical to adam's); the unimodal heads keep their own Adam",
                          "adam", "str")
    momentum: float = _opt(_float(0.0, 1.0, hi_open=True), "momentum of sgd (0 = plain θ ← θ − lr·g); only with "
                           "optimizer: sgd", 0.0, "float")
    lr: float = _opt(_float(0.0, lo_open=True), "learning rate of backbone and FCM (the optimizer's) and of the "
                     "unimodal heads (Adam) unless head_lr is set", 3e-4, "float")
    head_lr: Any = _opt(_float(0.0, lo_open=True, optional=True), "learning rate of the methods' unimodal heads "
                        "(their own Adam); null = lr (set it with optimizer: sgd, whose lr suits no Adam)", None,
                        "float | null")
    weight_decay: float = _opt(_float(0.0), "weight decay of the optimizer (L2 for adam and sgd, decoupled for "
                               "adamw) and of the unimodal heads", 3e-5, "float")
    tau: float = _opt(_float(0.0), "weight τ of the spatial loss L_mod (Eq. 26)", 0.3, "float")
    rho: float = _opt(_float(0.0, lo_open=True), "modulation intensity ρ (Eq. 21)", 1.4, "float")
    d_global: Any = _opt(_int(1, optional=True, hi=MAX_WIDTH), f"FCM global width (at most {MAX_WIDTH}); null = (Σ d_m) / 4",
                         None, "int | null")
    loss: str = _opt(_choice(LOSSES, "loss"), "task loss: auto (nll for classification, mse for regression), nll, ce, focal, mse", "auto", "str")
    focal_gamma: float = _opt(_float(0.0), "focusing parameter γ of the focal loss", 0.5, "float")
    class_weights: Any = _opt(_class_weights, "class weights of nll/ce/focal: none, balanced (N / (C n_c)), "
                              "inverse (1 / class frequency, MM-DFN's) or a list", "none", "str | list")
    grad_clip: Any = _opt(_float(0.0, lo_open=True, optional=True), "max L2 norm of all gradients; null = off", 2.0, "float | null")
    early_stopping: int = _opt(_int(0), "stop after this many epochs without a better dev W-F1; 0 = off", 0, "int")
    dev_ratio: float = _opt(_float(0.0, 1.0, lo_open=True, hi_open=True), "share of training sequences held out "
                            "as dev split when the dataset has none", 0.1, "float")
    noise: bool = _opt(_bool, "add Gaussian noise with the gradient's std to modulated gradients (OGM-GE style)", False, "bool")
    missing_aware: bool = _opt(_bool, "unimodal heads and KL use only utterances where the modality is present", True, "bool")
    coefficients: str = _opt(_choice(COEFFICIENTS, "coefficient rule"), "guarded: handle ΣΔ ≈ 0 or < 0 explicitly; floored: guarded, and μ >= mu_floor·ρ on steps where some Δ <= 0; raw: the public code's formula", "guarded", "str")
    delta_mode: str = _opt(_choice(("same-batch", "history", "ema"), "delta mode"), "Δ^m: same-batch (decrease of the "
                           "discrepancy on the current batch by this step's head update), history (KL_{t-1} - KL_t "
                           "across batches, the public code's) or ema (that decrease smoothed, delta_beta)", "same-batch", "str")
    modulation_start: int = _opt(_int(0), "first epoch (0-based) with gradient modulation", 0, "int")
    modulation_end: Any = _opt(_int(1, optional=True), "epoch at which modulation stops (exclusive); null = never", None, "int | null")
    device: str = _opt(_device, "auto (cuda if available, else cpu), cpu, cuda, cuda:N, mps", "auto", "str")
    threads: Any = _opt(_int(1, optional=True, hi=MAX_THREADS), f"torch CPU threads (at most {MAX_THREADS}); null = torch's default",
                        None, "int | null")
    tsne_samples: int = _opt(_int(0), "test utterances saved for the t-SNE figure (0 = none)", 400, "int")
    tensorboard: bool = _opt(_bool, "write TensorBoard event files to DIR/tb", True, "bool")
    checkpoint: bool = _opt(_bool, "write DIR/checkpoint.pt (best model)", True, "bool")

    # ------------------------------------------------------------------ construction

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> "Config":
        """Validate ``data`` (every check of the module docstring) and build a Config."""
        try:
            if not isinstance(data, Mapping):
                raise ConfigError(f"expected a mapping of keys to values, got {_tname(data)}")
            data = canonical_mapping(data)
            valid = cls.keys()
            for k in data:
                if k not in valid:
                    raise ConfigError(_unknown(str(k), valid), key=str(k))
            values = {}
            for f in fields(cls):
                if f.name in data:
                    values[f.name] = f.metadata["check"](f.name, data[f.name])
                elif f.default is MISSING and f.default_factory is MISSING:
                    raise ConfigError("is required", key=f.name)
            cfg = cls(**values)
            cfg._check_cross()
            return cfg
        except ConfigError as exc:
            if source and not exc.source:
                raise ConfigError(_bare(exc), key=exc.key, source=source) from None
            raise

    def _check_cross(self) -> None:
        check_backbone_options(self.backbone, self.backbone_options)
        check_method_options(self.method, self.method_options)
        if self.momentum and self.optimizer != "sgd":
            raise ConfigError(f"momentum applies to optimizer: sgd only (optimizer is {self.optimizer!r}); "
                              "leave it at 0", key="momentum")
        if self.modulation_end is not None and self.modulation_end <= self.modulation_start:
            raise ConfigError(f"must be > modulation_start ({self.modulation_start}), got {self.modulation_end}",
                              key="modulation_end")

    def to_dict(self) -> dict:
        """Plain JSON-able values (lists, dicts, numbers, strings)."""
        return json.loads(json.dumps(asdict(self)))

    def replace(self, **changes: Any) -> "Config":
        d = self.to_dict()
        d.update(changes)
        return Config.from_dict(d)

    # ------------------------------------------------------------------ derived values

    @property
    def effective_mask_seed(self) -> int:
        return self.seed if self.mask_seed is None else self.mask_seed

    @property
    def effective_eval_batch_size(self) -> int:
        return self.eval_batch_size or 4 * self.batch_size


def with_source(exc: ConfigError, source: str | None) -> ConfigError:
    """The same error, prefixed with the config file it came from (if not already)."""
    if not source or exc.source:
        return exc
    return ConfigError(_bare(exc), key=exc.key, source=source)


def _bare(exc: ConfigError) -> str:
    msg = str(exc)
    if exc.key:
        prefix = f"key {exc.key!r}: "
        msg = msg.split(prefix, 1)[1] if prefix in msg else msg
    return msg


def _unknown(key: str, valid: tuple[str, ...]) -> str:
    old = {k: v for k, v in KEY_ALIASES.items() if v in valid}  # a misspelt old name suggests the new one
    close = difflib.get_close_matches(key, tuple(valid) + tuple(old), n=1, cutoff=0.5)
    hint = f"; did you mean {old.get(close[0], close[0])!r}?" if close else ""
    return f"unknown key{hint} valid keys: {', '.join(valid)}"


def backbone_parameters(name: str) -> tuple[str, ...]:
    """Keyword options of backbone ``name``'s constructor (without dims and out_dim); ``()`` = any."""
    from balm.backbones.registry import backbone_parameters as params

    return params(name)


_WIDTH_KEY = re.compile(r"hidden|dim|width")  # backbone options that set a layer's width


def check_backbone_options(name: str, options: Mapping[str, Any]) -> None:
    from balm.backbones.registry import takes_any_option

    try:
        valid = backbone_parameters(name)
        if takes_any_option(name):
            return
    except (ValueError, TypeError) as exc:
        raise ConfigError(getattr(exc, "detail", str(exc)), key="backbone") from None
    for k in options:
        if k not in valid:
            if not valid:
                raise ConfigError(f"backbone {name!r} takes no options", key=f"backbone_options.{k}")
            raise ConfigError(_unknown(k, valid).replace("valid keys", f"options of {name}"), key=f"backbone_options.{k}")
    for k, v in options.items():
        if _WIDTH_KEY.search(k) and _is_int(v) and not 1 <= v <= MAX_WIDTH:
            raise ConfigError(f"expected a width between 1 and {MAX_WIDTH}, got {v}", key=f"backbone_options.{k}")


# keys of the config that the trainer offers to every method; method_options may not repeat them
SHARED_KEYS = ("d_global", "rho", "tau", "noise", "missing_aware", "coefficients", "delta_mode", "lr",
                "weight_decay", "start_epoch", "end_epoch")


def check_method_options(method: str, options: Mapping[str, Any]) -> None:
    """``method_options`` must be options of the chosen method (and not top-level keys)."""
    from balm.methods import method_options

    valid = sorted(set(method_options(method)) - set(SHARED_KEYS))
    for k in options:
        if k in SHARED_KEYS:
            key = {"start_epoch": "modulation_start", "end_epoch": "modulation_end"}.get(k, k)
            raise ConfigError(f"is a top-level key; set {key!r} instead", key=f"method_options.{k}")
        if k not in valid:
            listed = ", ".join(valid) if valid else "none"
            raise ConfigError(f"{_unknown(k, tuple(valid)).split(' valid keys')[0]} method {method!r} takes the "
                              f"options: {listed}", key=f"method_options.{k}")


# old key names, still read (with a FutureWarning) so existing configs keep working
KEY_ALIASES = {"variant": "method", "variant_options": "method_options"}


def canonical_key(key: str) -> str:
    """``key`` with an old top-level name (:data:`KEY_ALIASES`) replaced, warning once per use."""
    top, dot, rest = str(key).partition(".")
    if top not in KEY_ALIASES:
        return key
    new = KEY_ALIASES[top]
    warnings.warn(f"config key {top!r} is now {new!r}; {top!r} still works but will be removed", FutureWarning,
                  stacklevel=3)
    return new + dot + rest


def canonical_mapping(data: Mapping[str, Any], source: str | None = None) -> dict:
    """``data`` with old top-level key names replaced; giving both the old and the new name is an error."""
    if not any(k in KEY_ALIASES for k in data):
        return dict(data)
    out = {}
    for k, v in data.items():
        new = canonical_key(k)
        if new in out or (new != k and new in data):
            raise ConfigError(f"set either {k!r} or {new!r}, not both", key=new, source=source)
        out[new] = v
    return out


# --------------------------------------------------------------------------- overrides and loading


def parse_set(items: list[str] | None) -> list[tuple[str, Any]]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``[("a.b", 1), ("c", [1, 2])]`` (values parsed as YAML)."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out.append((canonical_key(k), parse_value(v)))
    return out


def apply_overrides(data: dict, overrides: list[tuple[str, Any]], valid: tuple[str, ...] | None = None) -> dict:
    """Return a copy of ``data`` with dotted-key overrides applied; unknown top-level keys error."""
    valid = valid or Config.keys()
    out = json.loads(json.dumps(canonical_mapping(data), default=str)) if data else {}
    for key, value in overrides:
        parts = key.split(".")
        if parts[0] not in valid:
            raise ConfigError(_unknown(parts[0], valid) + " (in --set)", key=parts[0])
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a config file (YAML or JSON), apply ``--set`` overrides, validate."""
    data = read_mapping(path) if path else {}
    source = str(path) if path else None
    if "sweep" in data:
        raise ConfigError("a 'sweep' section belongs in a sweep config; run it with `balm sweep`", key="sweep", source=source)
    data = apply_overrides(data, parse_set(overrides))
    return Config.from_dict(data, source=source)


def config_reference() -> list[dict]:
    """(key, type, default, meaning) of every key, for the docs and ``balm train --help-config``."""
    rows = []
    for f in fields(Config):
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else "(required)")
        rows.append({"key": f.name, "type": f.metadata["type"], "default": default, "doc": f.metadata["doc"]})
    return rows
