"""The one check of a missing-rate setting (``check_rates``) and the error base it raises."""

import pickle

import numpy as np
import pytest

from balm.data.errors import DataError
from balm.errors import BalmError
from balm.masking import MissingRates, check_rates

MODS = ("audio", "text", "visual")


def test_without_modalities_the_form_is_kept_as_floats():
    assert check_rates(None) is None
    assert check_rates(0) == 0.0 and isinstance(check_rates(0), float)
    assert check_rates((0, 0.5)) == [0.0, 0.5]
    assert check_rates(np.array([0.25, 0.5])) == [0.25, 0.5]
    assert check_rates({"text": 0.3, "audio": 0}) == {"text": 0.3, "audio": 0.0}


def test_with_modalities_rates_come_in_that_order():
    assert check_rates({"visual": 0.7, "audio": 0.5, "text": 0.3}, MODS) == (0.5, 0.3, 0.7)
    assert check_rates(0.4, MODS) == (0.4, 0.4, 0.4)
    assert check_rates([0.1, 0.2, 0.3], 3) == (0.1, 0.2, 0.3)
    out = check_rates([0.1, 0.2, 0.3], MODS)
    assert isinstance(out, MissingRates) and out.modalities == MODS


def test_checked_rates_are_taken_as_they_are_for_the_same_modalities():
    checked = check_rates([0.1, 0.2, 0.3], MODS)
    assert check_rates(checked, MODS) is checked and check_rates(checked) is checked and check_rates(checked, 3) is checked
    again = check_rates(checked, ("a", "b", "c"))  # other modalities: checked afresh
    assert again is not checked and again.modalities == ("a", "b", "c") and again == checked
    with pytest.raises(BalmError, match="expected 2 missing rates"):
        check_rates(checked, ("a", "b"))
    assert pickle.loads(pickle.dumps(checked)).modalities == MODS


@pytest.mark.parametrize("rates, mods, key, words", [
    ([0.5, 1.0, 0.3], None, "rates[1]", "must lie in [0, 1), got 1.0"),
    ([0.5, -0.1], None, "rates[1]", "must lie in [0, 1), got -0.1"),
    ({"audio": float("nan")}, None, "rates.audio", "expected a missing rate"),
    ([True, 0.1], None, "rates[0]", "got True (bool)"),
    ("0.5", None, "rates", "got '0.5' (str)"),
    ([], None, "rates", "empty list"),
    ({}, None, "rates", "empty mapping"),
    ([0.1, 0.2], MODS, "rates", "expected 3 missing rates, one per modality of the dataset in the order"),
    ([0.1, 0.2], 3, "rates", "expected 3 missing rates, one per modality, got 2"),
    ({"audio": 0.1, "text": 0.2, "vision": 0.3}, MODS, "rates", "unknown modality 'vision'"),
    ({"audio": 0.1, "text": 0.2}, MODS, "rates", "no missing rate for modality 'visual'"),
])
def test_refusals_name_the_key(rates, mods, key, words):
    with pytest.raises(BalmError) as err:
        check_rates(rates, mods)
    assert type(err.value) is BalmError and err.value.key == key
    assert str(err.value) == f"key {key!r}: {err.value.detail}" and words in err.value.detail


def test_the_caller_picks_its_layer_of_the_one_error():
    with pytest.raises(BalmError) as err:
        check_rates([0.5, 1.0], key="test_rates", source="c.yaml")
    assert str(err.value) == "c.yaml: key 'test_rates[1]': a missing rate must lie in [0, 1), got 1.0"
    with pytest.raises(DataError) as err:
        check_rates([0.5], MODS, key="mask_info.rates", source="d.npz", error=DataError)
    assert str(err.value).startswith("d.npz: field 'mask_info.rates': expected 3 missing rates")
    assert err.value.field == err.value.key == "mask_info.rates" and isinstance(err.value, (BalmError, ValueError))
