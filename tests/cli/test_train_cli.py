"""`balm train` / `balm sweep` from the command line: bad configs fail before any work, naming the key."""

import json

import pytest

from balm.cli.main import main
from exp_helpers import base_config, write_yaml


def _fails_cleanly(capsys, tmp_path, argv, *fragments):
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    for f in fragments:
        assert f in err, (f, err)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"epochz": 3}, ["key 'epochz'", "did you mean 'epochs'"]),
        ({"epochs": "many"}, ["key 'epochs'", "expected an integer"]),
        ({"rates": [0.5, 0.7, 1.2]}, ["key 'rates[2]'", "[0, 1)"]),
        ({"rates": [0.5, 0.7]}, ["key 'rates'", "expected 3 missing rates"]),
        ({"backbone": "mmgcm"}, ["key 'backbone'", "valid:", "late_fusion"]),
        ({"method": "balm-x"}, ["key 'method'", "valid:", "balm-s"]),
        ({"modalities": ["audio", "txt"]}, ["key 'modalities'", "did you mean 'text'"]),
    ],
)
def test_train_bad_config_fails_before_any_work(capsys, tmp_path, tiny_data, change, fragments):
    cfg = write_yaml(tmp_path / "c.yaml", {**base_config(tiny_data), **change})
    _fails_cleanly(capsys, tmp_path, ["train", "--config", str(cfg)], str(cfg), *fragments)


def test_train_bad_set_override(capsys, tmp_path, tiny_data):
    cfg = write_yaml(tmp_path / "c.yaml", base_config(tiny_data))
    _fails_cleanly(capsys, tmp_path, ["train", "--config", str(cfg), "--set", "tua=0.5"], "key 'tua'", "did you mean 'tau'")
    _fails_cleanly(capsys, tmp_path, ["train", "--config", str(cfg), "--set", "rho=high"], "key 'rho'", "expected a number")


def test_sweep_bad_axis_fails_before_any_work(capsys, tmp_path, tiny_data):
    cfg = write_yaml(tmp_path / "s.yaml", {**base_config(tiny_data), "sweep": {"method": ["none", "blam"]}})
    _fails_cleanly(capsys, tmp_path, ["sweep", "--config", str(cfg)], "key 'method'", "did you mean 'balm'", "run method=\"blam\"")


def test_train_cli_writes_result(capsys, tmp_path, tiny_data):
    cfg = write_yaml(tmp_path / "c.yaml", base_config(tiny_data, method="balm"))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--set", "epochs=1", "--set", "seed=5", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["config"]["epochs"] == 1 and res["config"]["seed"] == 5 and res["config"]["method"] == "balm"
    printed = capsys.readouterr().out
    assert f"w-f1 {res['test']['wf1']:.4f}" in printed


def test_print_config_and_list_keys(capsys, tmp_path, tiny_data):
    cfg = write_yaml(tmp_path / "c.yaml", base_config(tiny_data))
    assert main(["train", "--config", str(cfg), "--set", "tau=0.7", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["tau"] == 0.7
    assert main(["train", "--list-keys"]) == 0
    listed = capsys.readouterr().out
    from balm.experiments.config import Config

    for key in Config.keys():
        assert key in listed


def test_demo_sweep_is_the_documented_grid():
    from balm.cli.demo import demo_sweep
    from balm.experiments.sweep import check_runs, expand

    sweep = expand(demo_sweep())
    assert len(sweep.runs) == 8
    settings = {(tuple(r.config.rates.values()), r.config.method, r.config.seed) for r in sweep.runs}
    assert settings == {(rates, v, s) for rates in ((0.5, 0.7, 0.3), (0.3, 0.5, 0.7))
                        for v in ("none", "balm") for s in (0, 1)}
    # where docs/compare.md measured BALM ahead: late fusion on the MOSEI-like set, 4 epochs
    assert {r.config.backbone for r in sweep.runs} == {"late_fusion"} and sweep.runs[0].config.data == "synthetic:mosei"
    assert sweep.runs[0].config.epochs == 4 and expand(demo_sweep(data="iemocap")).runs[0].config.data == "synthetic:iemocap"
    check_runs(sweep.runs)  # the synthetic data and both models build


def test_demo_sentence_is_computed_from_the_pairs():
    from balm.cli.demo import what_the_table_shows

    pairs = [{"setting": "s1", "seed": 0, "plain": 0.70, "method": 0.74},
             {"setting": "s1", "seed": 1, "plain": 0.70, "method": 0.72},
             {"setting": "s2", "seed": 0, "plain": 0.60, "method": 0.59},
             {"setting": "s2", "seed": 1, "plain": 0.60, "method": 0.63}]
    # differences +4, +2, -1, +3 points: mean +2.00; per setting +3.00 and +1.00
    assert what_the_table_shows(pairs, "lf", "lf+balm") == (
        "lf+balm is ahead of lf in 3 of 4 pairs: test W-F1 +2.00 points on average "
        "(per setting +1.00 to +3.00; ahead in 2 of 2 setting(s), 4 paired runs).")
    worse = [{**p, "method": p["plain"] - 0.01} for p in pairs]
    assert what_the_table_shows(worse, "lf", "lf+balm").startswith("lf+balm loses to lf in every pair: test W-F1 -1.00")
    assert what_the_table_shows([], "lf", "lf+balm").startswith("No finished pair")
