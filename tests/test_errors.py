"""One error base for bad input: ConfigError and DataError keep their messages and share BalmError."""

import pytest

from balm.data.errors import DataError
from balm.errors import BalmError
from balm.experiments.config import Config, ConfigError


def test_messages_name_source_and_key_or_field():
    assert str(ConfigError("expected an integer", key="epochs", source="c.yaml")) == "c.yaml: key 'epochs': expected an integer"
    assert str(ConfigError("--out DIR is required")) == "--out DIR is required"
    assert str(DataError("bad shape", source="d.npz", field="train.mask")) == "d.npz: field 'train.mask': bad shape"
    assert str(DataError("no splits", field="splits")) == "field 'splits': no splits"
    err = DataError("x", source="s", field="f")
    assert (err.source, err.key, err.field, err.detail) == ("s", "f", "f", "x")


def test_one_except_clause_catches_every_layer():
    for exc in (ConfigError("a", key="k"), DataError("b", field="f"), BalmError("c")):
        with pytest.raises(BalmError):
            raise exc
        assert isinstance(exc, ValueError)


def test_a_bad_rate_in_a_config_file_is_a_config_error_naming_file_and_entry():
    with pytest.raises(ConfigError) as err:
        Config.from_dict({"data": "synthetic:iemocap", "rates": {"audio": 0.2, "text": 1.0}}, source="c.yaml")
    assert str(err.value) == "c.yaml: key 'rates.text': a missing rate must lie in [0, 1), got 1.0"
