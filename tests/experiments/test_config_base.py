"""Config inheritance: ``base: other.yaml`` (docs/experiments.md, "Inheritance")."""

import json

import pytest

from balm.experiments.config import ConfigError, load_config, read_mapping
from balm.experiments.sweep import load_sweep


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_child_keys_replace_the_base_keys_whole(tmp_path):
    write(tmp_path / "a.yaml", "data: synthetic:iemocap\nbackbone: mmgcn\nbackbone_options: {dropout: 0.4, num_layers: 2}\n"
                               "lr: 0.001\nseed: 3\n")
    child = write(tmp_path / "b.yaml", "base: a.yaml\nbackbone_options: {lamda: 0.7}\nlr: 0.01\n")
    assert read_mapping(child) == {"data": "synthetic:iemocap", "backbone": "mmgcn",
                                   "backbone_options": {"lamda": 0.7}, "lr": 0.01, "seed": 3}
    cfg = load_config(child)
    assert cfg.backbone_options == {"lamda": 0.7}  # not merged with the base's options
    assert (cfg.lr, cfg.seed) == (0.01, 3)


def test_chains_and_paths_relative_to_the_file_that_names_them(tmp_path):
    write(tmp_path / "common" / "root.yaml", "data: synthetic:mosei\nepochs: 7\nbatch_size: 4\ntau: 0.9\n")
    write(tmp_path / "common" / "mid.json", json.dumps({"base": "root.yaml", "epochs": 9, "rho": 1.1}))
    leaf = write(tmp_path / "deep" / "leaf.yaml", "base: ../common/mid.json\nbatch_size: 2\n")
    cfg = load_config(leaf)
    assert (cfg.data, cfg.epochs, cfg.batch_size, cfg.tau, cfg.rho) == ("synthetic:mosei", 9, 2, 0.9, 1.1)


def test_set_overrides_apply_after_inheritance(tmp_path):
    write(tmp_path / "a.yaml", "data: synthetic:iemocap\nlr: 0.001\nepochs: 5\n")
    child = write(tmp_path / "b.yaml", "base: a.yaml\nlr: 0.01\n")
    cfg = load_config(child, ["lr=0.5", "data=synthetic:mosei"])
    assert (cfg.lr, cfg.data, cfg.epochs) == (0.5, "synthetic:mosei", 5)


def test_a_sweep_inherits_a_train_config_and_another_sweep(tmp_path):
    write(tmp_path / "train.yaml", "data: synthetic:iemocap\nmethod: balm\nseed: 4\nepochs: 3\n")
    sweep = write(tmp_path / "sweep.yaml", "base: train.yaml\nsweep: {method: [none, balm], seed: 2}\n")
    runs = load_sweep(sweep).runs
    assert [(r.config.method, r.config.seed, r.config.epochs) for r in runs] == [
        ("none", 0, 3), ("none", 1, 3), ("balm", 0, 3), ("balm", 1, 3)]
    # the child's sweep replaces the base's sweep whole: only the tau axis, method and seed from the file
    other = write(tmp_path / "other.yaml", "base: sweep.yaml\nsweep: {tau: [0.1, 0.2]}\n")
    assert [(r.config.method, r.config.seed, r.config.tau) for r in load_sweep(other).runs] == [
        ("balm", 4, 0.1), ("balm", 4, 0.2)]
    # --set sweep.* after inheritance
    assert len(load_sweep(other, ["sweep.seed=3"]).runs) == 6


def test_a_missing_base_names_the_file_and_the_key(tmp_path):
    child = write(tmp_path / "b.yaml", "base: nowhere.yaml\ndata: synthetic:iemocap\n")
    with pytest.raises(ConfigError) as exc:
        load_config(child)
    msg = str(exc.value)
    assert str(child) in msg and "'base'" in msg and str(tmp_path / "nowhere.yaml") in msg
    assert exc.value.key == "base" and exc.value.source == str(child)


def test_a_missing_base_deeper_in_the_chain_names_the_file_that_names_it(tmp_path):
    mid = write(tmp_path / "sub" / "mid.yaml", "base: gone.yaml\n")
    write(tmp_path / "leaf.yaml", "base: sub/mid.yaml\n")
    with pytest.raises(ConfigError) as exc:
        read_mapping(tmp_path / "leaf.yaml")
    assert exc.value.source == str(mid) and str(tmp_path / "sub" / "gone.yaml") in str(exc.value)


@pytest.mark.parametrize("files", [
    {"a.yaml": "base: a.yaml\n"},
    {"a.yaml": "base: b.yaml\n", "b.yaml": "base: sub/../c.yaml\n", "c.yaml": "base: a.yaml\n"},
])
def test_cycles_are_refused_naming_the_files(tmp_path, files):
    (tmp_path / "sub").mkdir()
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError, match="inheritance cycle") as exc:
        read_mapping(tmp_path / "a.yaml")
    named = str(exc.value).split("inheritance cycle: ")[1].split(" -> ")
    assert [(tmp_path / p).resolve().name for p in named] == [*files, "a.yaml"]  # the loop, closed
    assert exc.value.key == "base"


def test_a_base_diamond_is_not_a_cycle(tmp_path):
    # two files of one chain may not repeat, but one file may be the base of several
    write(tmp_path / "root.yaml", "data: synthetic:iemocap\nepochs: 2\n")
    write(tmp_path / "a.yaml", "base: root.yaml\nlr: 0.01\n")
    write(tmp_path / "b.yaml", "base: root.yaml\nlr: 0.02\n")
    assert load_config(tmp_path / "a.yaml").lr == 0.01 and load_config(tmp_path / "b.yaml").lr == 0.02


@pytest.mark.parametrize("value", ["null", "3", "[a.yaml]", "''"])
def test_base_must_be_a_path(tmp_path, value):
    child = write(tmp_path / "b.yaml", f"base: {value}\ndata: synthetic:iemocap\n")
    with pytest.raises(ConfigError, match="expected the path of a config file") as exc:
        load_config(child)
    assert exc.value.key == "base" and exc.value.source == str(child)


def test_base_is_not_a_train_key(tmp_path):
    write(tmp_path / "a.yaml", "data: synthetic:iemocap\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(tmp_path / "a.yaml", ["base=other.yaml"])
