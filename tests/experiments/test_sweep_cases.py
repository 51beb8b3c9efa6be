"""The `cases` sweep axis: named one-off override mappings crossed with the other axes."""

import hashlib
import json

import pytest

from balm.experiments.config import Config, ConfigError
from balm.experiments.sweep import expand, load_sweep, run_sweep
from exp_helpers import base_config, write_yaml

CASES = {"none": {"method": "none"}, "balm": {"method": "balm"},
         "balm-public": {"method": "balm", "missing_aware": False, "coefficients": "raw"}}


def _digest(cfg: Config) -> str:
    return hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()[:8]


def test_cases_are_crossed_with_the_other_axes_in_order(tiny_data):
    sweep = expand({**base_config(tiny_data, noise=True),
                    "sweep": {"rates": [[0.5, 0.7, 0.3], [0.3, 0.5, 0.7]], "cases": CASES, "seed": [0, 1]}})
    assert len(sweep.runs) == 2 * 3 * 2
    # product order: rates slowest, then the cases in the order written, seed fastest
    assert [(r.setting["rates"][0], r.setting["cases"], r.setting["seed"]) for r in sweep.runs[:6]] == [
        (0.5, "none", 0), (0.5, "none", 1), (0.5, "balm", 0), (0.5, "balm", 1), (0.5, "balm-public", 0),
        (0.5, "balm-public", 1)]
    base = Config.from_dict(base_config(tiny_data, noise=True))
    for r in sweep.runs:
        want = base.replace(rates=r.setting["rates"], seed=r.setting["seed"], **CASES[r.setting["cases"]])
        assert r.config == want  # every override of the case applied, nothing else changed
        rates = "-".join(f"{v:g}" for v in r.setting["rates"])
        assert r.id == f"r{rates}_{r.setting['cases']}_s{r.setting['seed']}-{_digest(r.config)}"
    public = [r for r in sweep.runs if r.setting["cases"] == "balm-public"]
    assert all(not r.config.missing_aware and r.config.coefficients == "raw" and r.config.noise for r in public)
    assert sweep.cases == CASES


def test_sweep_without_cases_keeps_its_run_ids(tiny_data):
    sweep = expand({**base_config(tiny_data), "sweep": {"method": ["none", "balm"], "seed": [0, 1]}})
    for r in sweep.runs:  # <swept values>-<sha1 of the resolved config>, no case part
        assert r.id == f"{r.setting['method']}_s{r.setting['seed']}-{_digest(r.config)}"


def test_case_sweep_file_runs_and_records_the_cases(tiny_data, tmp_path):
    cfg = write_yaml(tmp_path / "cases.yaml", {**base_config(tiny_data, epochs=1, tsne_samples=0, checkpoint=False),
                                               "sweep": {"cases": {"plain": {}, "fcm": {"method": "fcm-only"}}}})
    sweep = load_sweep(cfg, ["sweep.seed=[3]"])
    assert [r.setting for r in sweep.runs] == [{"cases": "plain", "seed": 3}, {"cases": "fcm", "seed": 3}]
    assert sweep.runs[0].config.method == "none" and sweep.runs[1].config.method == "fcm-only"
    res = run_sweep(sweep, tmp_path / "out", workers=1)
    assert res["ran"] == 2 and not res["failed"]
    plan = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert plan["cases"] == {"plain": {}, "fcm": {"method": "fcm-only"}}
    assert [r["setting"]["cases"] for r in plan["runs"]] == ["plain", "fcm"]
    for r in sweep.runs:
        res = json.loads((tmp_path / "out" / "runs" / r.id / "result.json").read_text())
        assert res["config"]["method"] == r.config.method


@pytest.mark.parametrize("cases, axes, match", [
    ({"x": {"method": "balm"}}, {"method": ["none"]}, r"'method' is set by case 'x' and swept as axis 'method'"),
    ({"x": {"backbone_options.hidden": 8}}, {"backbone_options": [{}]}, r"set by case 'x' and swept as axis"),
    ({"a": {"method": "balm"}, "b": {"method": "balm", "coefficients": "guarded"}}, {},
     r"cases 'a' and 'b' give the same run config"),
    ({"x": {"coeficients": "raw"}}, {}, r"key 'sweep.cases.x.coeficients'.*did you mean 'coefficients'"),
    ({"x": {"coefficients": "rough"}}, {}, r"key 'coefficients'.*unknown coefficient rule 'rough'.*run cases=\"x\""),
    ({"bad name": {}}, {}, r"a case name must be"),
    ({"x": ["variant", "balm"]}, {}, r"key 'sweep.cases.x'.*expected a mapping"),
    ([{"method": "balm"}], {}, r"key 'sweep.cases'.*mapping of case names"),
])
def test_bad_cases_are_refused_naming_the_key(tiny_data, cases, axes, match):
    with pytest.raises(ConfigError, match=match):
        expand({**base_config(tiny_data), "sweep": {**axes, "cases": cases}}, source="s.yaml")


def test_dotted_axes_reach_into_method_options_beside_a_case_option():
    """A grid for CGGM (magnitude x lam) as dotted axes; a case may set another method option by a
    dotted key (method_options.modulate) without clashing with the axes."""
    from balm.experiments.sweep import expand

    sw = expand({"data": "synthetic:iemocap", "method": "cggm",
                 "sweep": {"cases": {"grad": {}, "upd": {"method_options.modulate": "update"}},
                           "method_options.magnitude": [1.2, 1.6], "method_options.lam": [0.1, 0.3]}})
    got = sorted((r.setting["cases"], r.config.method_options.get("modulate", "gradient"),
                  r.config.method_options["magnitude"], r.config.method_options["lam"]) for r in sw.runs)
    assert got == sorted((c, m, a, b) for c, m in (("grad", "gradient"), ("upd", "update"))
                         for a in (1.2, 1.6) for b in (0.1, 0.3))
    assert len({r.id for r in sw.runs}) == 8
