"""A run's data: the config resolved against the dataset once, dev split, masks, modality subset."""

import numpy as np
import pytest

import balm.data
from balm.experiments.config import Config, ConfigError
from balm.experiments.prepare import check_against_dataset, prepare_data, resolve_modalities
from balm.masking import MissingRates, derive_seed, make_masks
from exp_helpers import base_config


def test_rates_count_and_names_checked_against_dataset():
    mods = ("audio", "text", "visual")
    cfg = Config.from_dict({"data": "x", "rates": [0.1, 0.2]})
    with pytest.raises(ConfigError, match=r"key 'rates'.*expected 3 missing rates"):
        resolve_modalities(cfg, mods)
    cfg = Config.from_dict({"data": "x", "rates": {"audio": 0.1, "text": 0.2, "vision": 0.3}})
    with pytest.raises(ConfigError, match="unknown modality 'vision'"):
        resolve_modalities(cfg, mods)
    cfg = Config.from_dict({"data": "x", "rates": {"visual": 0.3, "audio": 0.1, "text": 0.2}, "modalities": "LA"})
    resolved = resolve_modalities(cfg, mods)
    assert resolved.modalities == ("audio", "text") and resolved.rates == (0.1, 0.2, 0.3)
    cfg = Config.from_dict({"data": "x", "rates": 0.4})
    assert resolve_modalities(cfg, mods).rates == (0.4, 0.4, 0.4)


def test_rebalancing_variants_need_two_modalities():
    cfg = Config.from_dict({"data": "x", "method": "balm", "modalities": "L"})
    with pytest.raises(ConfigError, match=r"key 'modalities'.*needs at least 2.*fcm-only"):
        resolve_modalities(cfg, ("audio", "text", "visual"))
    assert resolve_modalities(cfg.replace(method="fcm-only"), ("audio", "text", "visual")).modalities == ("text",)


@pytest.mark.parametrize("task, kw, key, words", [
    ("regression", {"loss": "focal"}, "loss", "regression task"),
    ("classification", {"loss": "mse"}, "loss", "classification task"),
    ("regression", {"class_weights": [1.0, 2.0]}, "class_weights", "classification only"),
    ("classification", {"class_weights": [1.0, 2.0]}, "class_weights", "expected 6 weights"),
])
def test_loss_and_class_weights_are_checked_against_the_task(task, kw, key, words):
    cfg = Config.from_dict({"data": "x", **kw})
    with pytest.raises(ConfigError, match=rf"key '{key}'.*{words}"):
        check_against_dataset(cfg, task, ("audio", "text", "visual"), 6)


def test_rates_are_resolved_once_and_the_masks_get_them_as_they_are(tiny_data, monkeypatch):
    cfg = Config.from_dict(base_config(tiny_data, rates={"visual": 0.3, "audio": 0.5, "text": 0.7}, mask_seed=2))
    given = []
    apply_masks = balm.data.apply_masks
    monkeypatch.setattr(balm.data, "apply_masks", lambda ds, rates, *a, **k: given.append(rates) or apply_masks(ds, rates, *a, **k))
    data = prepare_data(cfg)
    assert isinstance(data.rates, MissingRates) and data.rates == (0.5, 0.7, 0.3)
    assert data.rates.modalities == data.all_modalities == ("audio", "text", "visual")
    assert len(given) == 1 and given[0] is data.rates
    for name, split in data.dataset.splits.items():  # the operator's masks, split by split
        want = make_masks(split.num_utterances, (0.5, 0.7, 0.3), derive_seed(2, name), strategy="exact")  # the default mask_strategy
        np.testing.assert_array_equal(split.mask, want)


def test_dataset_mismatch_fails_in_prepare(tiny_data):
    cfg = Config.from_dict(base_config(tiny_data, rates=[0.5, 0.5]))
    with pytest.raises(ConfigError, match=r"key 'rates'.*expected 3 missing rates"):
        prepare_data(cfg)


def test_test_rates_mask_only_the_test_split(tiny_data):
    cfg = Config.from_dict(base_config(tiny_data, rates=[0.5, 0.7, 0.3], test_rates=0.0))
    data = prepare_data(cfg)
    assert data.realised["test"] == {"audio": 0.0, "text": 0.0, "visual": 0.0}
    assert data.dataset["test"].mask.all()
    plain = prepare_data(cfg.replace(test_rates=None))
    assert data.realised["train"] == plain.realised["train"] and data.realised["dev"] == plain.realised["dev"]
    np.testing.assert_array_equal(data.dataset["train"].mask, plain.dataset["train"].mask)
    assert plain.realised["test"]["text"] > 0.6
