"""A run's data: the dataset checked against the config, the dev split, the masks, the modality subset.

:func:`prepare_data` loads the dataset (cached per process), resolves the config's modalities and
missing rates against it once (:func:`check_against_dataset`) and returns :class:`PreparedData`,
which the rest of the run uses as it is: its rates are already checked and in dataset order.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

import numpy as np

from balm.data.dataset import Dataset
from balm.masking.rates import MissingRates, check_rates

from .config import Config, ConfigError

# methods without a gradient-rebalancing part, the only ones that make sense on one modality
SINGLE_MODALITY_METHODS = ("none", "fcm-only")


@dataclass(frozen=True)
class Selection:
    """A config resolved against a dataset's modalities: the selected modalities (dataset order)
    and the missing rates of every dataset modality (None: keep the stored masks)."""

    modalities: tuple[str, ...]
    rates: MissingRates | None
    test_rates: MissingRates | None


def resolve_modalities(cfg: Config, dataset_modalities: tuple[str, ...]) -> Selection:
    """``cfg``'s modalities and rates (``rates``, ``test_rates``) resolved against the dataset's
    modalities; ConfigError on a mismatch (rates count or names, unknown modality, a rebalancing
    variant on one modality)."""
    mods = tuple(dataset_modalities)
    rates = check_rates(cfg.rates, mods, key="rates", error=ConfigError)
    test_rates = check_rates(cfg.test_rates, mods, key="test_rates", error=ConfigError)
    selected = mods if cfg.modalities is None else tuple(cfg.modalities)
    for m in selected:
        if m not in mods:
            close = difflib.get_close_matches(m, mods, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown modality {m!r}{hint} the dataset has {list(mods)}", key="modalities")
    selected = tuple(m for m in mods if m in selected)  # keep dataset order
    if len(selected) < 2 and cfg.method not in SINGLE_MODALITY_METHODS:
        raise ConfigError(
            f"method {cfg.method!r} rebalances gradients between modalities and needs at least 2, but only "
            f"{list(selected)} is selected; on one modality use {' or '.join(SINGLE_MODALITY_METHODS)}",
            key="modalities")
    return Selection(selected, rates, test_rates)


def check_against_dataset(cfg: Config, task: str, modalities: tuple[str, ...], num_classes: int | None) -> Selection:
    """Every check that needs the dataset (rates count, modality names, loss vs task, class weights
    length); returns the resolved :class:`Selection`."""
    selection = resolve_modalities(cfg, modalities)
    if task == "regression" and cfg.loss not in ("auto", "mse"):
        raise ConfigError(f"the dataset is a regression task; use loss 'mse' (or 'auto'), got {cfg.loss!r}", key="loss")
    if task == "classification" and cfg.loss == "mse":
        raise ConfigError("the dataset is a classification task; use nll, ce or focal (or auto)", key="loss")
    if isinstance(cfg.class_weights, list):
        if task == "regression":
            raise ConfigError("class weights apply to classification only", key="class_weights")
        if len(cfg.class_weights) != num_classes:
            raise ConfigError(f"expected {num_classes} weights (one per class), got {len(cfg.class_weights)}",
                              key="class_weights")
    return selection


_DATA_CACHE: dict[str, Dataset] = {}


def load_base(spec: str) -> Dataset:
    """``balm.data.load(spec)``, cached per process (a sweep worker reuses it across runs)."""
    if spec not in _DATA_CACHE:
        from balm.data import load

        if len(_DATA_CACHE) >= 2:
            _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        _DATA_CACHE[spec] = load(spec)
    return _DATA_CACHE[spec]


def check_config(cfg: Config, dataset: Dataset | None = None) -> tuple[Dataset, Selection]:
    """Load (or take) the dataset and run the dataset-dependent checks: (dataset, selection)."""
    ds = dataset if dataset is not None else load_base(cfg.data)
    return ds, check_against_dataset(cfg, ds.task, ds.modalities, ds.num_classes)


@dataclass
class PreparedData:
    """The dataset as a run sees it: dev split ensured, masks drawn, modalities selected."""

    dataset: Dataset
    all_modalities: tuple[str, ...]
    modalities: tuple[str, ...]
    rates: MissingRates | None  # per dataset modality (all_modalities order)
    realised: dict[str, dict[str, float]]  # split -> modality -> realised missing rate (all modalities)
    test_rates: MissingRates | None = None


def prepare_data(cfg: Config, dataset: Dataset | None = None) -> PreparedData:
    """Dev split (seeded by ``mask_seed``), masks M(·; r) per split, then the modality subset."""
    from balm.data import apply_masks, ensure_dev
    from balm.masking import realised_rates

    base, selection = check_config(cfg, dataset)
    rates, test_rates = selection.rates, selection.test_rates
    seed = cfg.effective_mask_seed
    complete = ensure_dev(base, ratio=cfg.dev_ratio, seed=seed)
    ds = complete if rates is None else apply_masks(complete, rates, seed, cfg.mask_strategy)
    if test_rates is not None:
        tested = apply_masks(complete, test_rates, seed, cfg.mask_strategy)
        ds = dataclasses.replace(ds, splits={**ds.splits, "test": tested.splits["test"]})
    realised = {}
    for name, sp in ds.splits.items():
        r = np.zeros(len(ds.modalities)) if sp.mask is None else realised_rates(sp.mask)
        realised[name] = {m: float(v) for m, v in zip(ds.modalities, r)}
    if selection.modalities != ds.modalities:
        ds = dataclasses.replace(ds, splits={k: sp.subset_modalities(selection.modalities) for k, sp in ds.splits.items()})
    return PreparedData(ds, tuple(base.modalities), selection.modalities, rates, realised, test_rates)
