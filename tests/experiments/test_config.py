"""Config validation: strict keys with suggestions, types, ranges, names; overrides; named sweep sets."""

import json

import pytest

from balm.experiments.config import Config, ConfigError, load_config, parse_set
from balm.experiments.sweep import NAMED_SETS, expand, load_sweep
from exp_helpers import base_config, write_yaml


def test_defaults_and_roundtrip():
    cfg = Config.from_dict({"data": "synthetic:iemocap"})
    assert cfg.backbone == "late_fusion" and cfg.method == "none" and cfg.grad_clip == 2.0
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_data_is_required():
    with pytest.raises(ConfigError, match="'data'.*required"):
        Config.from_dict({})


@pytest.mark.parametrize(
    "key, suggestion",
    [("epoch", "epochs"), ("learning_rate", None), ("batchsize", "batch_size"), ("varaint", "method")],
)
def test_unknown_key_suggests_closest(tmp_path, key, suggestion):
    f = write_yaml(tmp_path / "c.yaml", {"data": "synthetic:iemocap", key: 3})
    with pytest.raises(ConfigError) as err:
        load_config(f)
    msg = str(err.value)
    assert f"key {key!r}" in msg and str(f) in msg and "unknown key" in msg
    if suggestion:
        assert f"did you mean {suggestion!r}" in msg


def test_unknown_key_in_set_override():
    with pytest.raises(ConfigError, match=r"key 'seeds'.*did you mean 'seed'"):
        load_config(None, ["data=synthetic:iemocap", "seeds=3"])


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("epochs", "ten", "expected an integer"),
        ("epochs", 2.5, "expected an integer"),
        ("lr", "fast", "expected a number"),
        ("noise", "yes", "expected true or false"),
        ("grad_clip", -1, "expected a number in"),
        ("dev_ratio", 1.0, "expected a number in"),
        ("batch_size", 0, ">= 1"),
        ("backbone_options", [1, 2], "expected a mapping"),
        ("modalities", "AXL", "modality names or letters"),
    ],
)
def test_wrong_type_or_range_names_the_key(key, value, fragment):
    with pytest.raises(ConfigError) as err:
        Config.from_dict({"data": "synthetic:iemocap", key: value})
    assert f"key {key!r}" in str(err.value) and fragment in str(err.value)


@pytest.mark.parametrize("rates, key", [([0.5, 1.0, 0.3], "rates[1]"), ([-0.1, 0.2, 0.3], "rates[0]"),
                                        ({"audio": 1.5}, "rates.audio"), (1.0, "rates")])
def test_rates_out_of_range(rates, key):
    with pytest.raises(ConfigError, match=rf"key '{key.replace('[', '.').replace(']', '.')}'.*\[0, 1\)"):
        Config.from_dict({"data": "synthetic:iemocap", "rates": rates})


@pytest.mark.parametrize("key, value, listed", [("backbone", "mmgnc", "mmgcn"), ("method", "bal", "balm-d"),
                                                ("loss", "focus", "focal"), ("mask_strategy", "papper", "exact")])
def test_unknown_names_list_valid_ones(key, value, listed):
    with pytest.raises(ConfigError) as err:
        Config.from_dict({"data": "synthetic:iemocap", key: value})
    msg = str(err.value)
    assert f"key {key!r}" in msg and "valid:" in msg and listed in msg


def test_unknown_backbone_option_is_an_error():
    with pytest.raises(ConfigError, match=r"key 'backbone_options.hiden'.*did you mean 'hidden'"):
        Config.from_dict({"data": "synthetic:iemocap", "backbone_options": {"hiden": 3}})


def test_set_values_are_yaml_and_dotted():
    cfg = load_config(None, ["data=synthetic:mosei", "lr=1e-3", "rates=[0.1, 0.2, 0.3]", "modalities=AL",
                             "backbone_options.hidden=64", "grad_clip=null"])
    assert cfg.lr == pytest.approx(1e-3) and isinstance(cfg.lr, float)
    assert cfg.rates == [0.1, 0.2, 0.3] and cfg.modalities == ["audio", "text"]
    assert cfg.backbone_options == {"hidden": 64} and cfg.grad_clip is None
    assert parse_set(["a.b=[1, x]"]) == [("a.b", [1, "x"])]


def test_sweep_expansion_named_sets_and_ids():
    sweep = expand({**base_config("d"), "sweep": {"rates": "imr-permutations", "seed": 2, "method": ["none", "balm"]}})
    assert len(sweep.runs) == 6 * 2 * 2
    assert len({r.id for r in sweep.runs}) == len(sweep.runs)
    perms = {tuple(r.config.rates.values()) for r in sweep.runs}
    assert perms == {(0.3, 0.5, 0.7), (0.3, 0.7, 0.5), (0.5, 0.3, 0.7), (0.5, 0.7, 0.3), (0.7, 0.3, 0.5), (0.7, 0.5, 0.3)}
    again = expand({**base_config("d"), "sweep": {"rates": "imr-permutations", "seed": 2, "method": ["none", "balm"]}})
    assert [r.id for r in again.runs] == [r.id for r in sweep.runs]  # stable ids
    assert NAMED_SETS["rates"]["smr"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    subsets = expand({**base_config("d"), "sweep": {"modalities": "subsets"}})
    assert [r.config.modalities for r in subsets.runs] == [
        ["audio"], ["visual"], ["text"], ["audio", "visual"], ["audio", "text"], ["text", "visual"],
        ["audio", "text", "visual"]]


def test_sweep_errors_name_the_axis():
    with pytest.raises(ConfigError, match=r"key 'sweep.rates'.*unknown named set 'imr'"):
        expand({**base_config("d"), "sweep": {"rates": "imr"}})
    with pytest.raises(ConfigError, match=r"key 'sweep.tua'.*did you mean 'tau'"):
        expand({**base_config("d"), "sweep": {"tua": [0.1]}})
    with pytest.raises(ConfigError, match=r"key 'rho'.*run rho=-1"):
        expand({**base_config("d"), "sweep": {"rho": [1.2, -1]}})


def test_variant_options_are_checked_before_any_work():
    with pytest.raises(ConfigError, match=r"method_options.alpah.*did you mean 'alpha'"):
        Config.from_dict({"data": "synthetic:iemocap", "method": "ogm-ge", "method_options": {"alpah": 0.2}})
    with pytest.raises(ConfigError, match=r"method_options.rho.*top-level key"):
        Config.from_dict({"data": "synthetic:iemocap", "method": "cggm", "method_options": {"rho": 1.2}})
    cfg = Config.from_dict({"data": "synthetic:iemocap", "method": "cggm", "method_options": {"lam": 0.5}})
    assert cfg.method == "cggm" and cfg.method_options == {"lam": 0.5}


def test_old_key_names_still_work_with_a_warning(tmp_path):
    with pytest.warns(FutureWarning, match="is now 'method"):
        cfg = Config.from_dict({"data": "synthetic:iemocap", "variant": "cggm", "variant_options": {"lam": 0.5}})
    assert cfg.method == "cggm" and cfg.method_options == {"lam": 0.5} and "variant" not in cfg.to_dict()
    with pytest.warns(FutureWarning):
        with pytest.raises(ConfigError, match="set either 'variant' or 'method', not both"):
            Config.from_dict({"data": "synthetic:iemocap", "variant": "balm", "method": "none"})
    f = write_yaml(tmp_path / "s.yaml", {**base_config("d"), "sweep": {"variant": ["none", "balm"]}})
    with pytest.warns(FutureWarning):
        sweep = load_sweep(f)
    assert [r.config.method for r in sweep.runs] == ["none", "balm"] and all("method" in r.setting for r in sweep.runs)
