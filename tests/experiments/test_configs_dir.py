"""Every file in configs/ loads and dry-runs: train configs and every run of every sweep validate,
and with ``data`` set to the matching synthetic set the dataset-dependent checks pass too."""

import json
from pathlib import Path

import pytest

from balm.experiments.config import load_config, read_mapping
from balm.experiments.sweep import check_runs, load_sweep
from balm.experiments.prepare import check_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FILES = sorted(p for p in CONFIGS.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
DATASETS = ("iemocap", "mosei")
TABLE_BACKBONES = ("micga", "sdrgnn", "gcnet", "mmgcn", "mmdfn")
# the missing-modality baselines beside MMGCN+BALM (docs/baselines.md): MMIN, MoMKE, RedCore, MCE, GCNet, MMGCN
MISSING_BASELINES = ("mmin", "momke", "redcore", "mce", "gcnet", "mmgcn")
PAPER = ("mmgcn.yaml", "mmdfn.yaml", "gcnet.yaml", "mmgcn-variants.yaml", "mmgcn-smr.yaml", "mmgcn-modalities.yaml",
         "mmgcn-unimodal.yaml", "mmgcn-tau-rho.yaml", "mmgcn-fcm.yaml")


def rel(path: Path) -> str:
    return path.relative_to(CONFIGS).as_posix()


# real sets: built once from ../shared/data (the AV-digits twin from one recording per group)
REAL = {"cmu-mosi": {}, "av-digits": {"limit": 1}}
_BUILT: dict[str, str] = {}


def synthetic_twin(data: str, tmp_path_factory) -> str:
    """The dataset a config's checks run on: the built-in synthetic set matching its ``data``
    (data/iemocap -> synthetic:iemocap), or for the real sets a build from ../shared/data."""
    if data.startswith("synthetic:"):
        return data
    name = Path(data).name
    if name in REAL:
        if name not in _BUILT:
            from balm.data.builders import build_dataset
            from real_data import real_folder

            source = real_folder("fsdd" if name == "av-digits" else name)
            _BUILT[name] = build_dataset(name, source, tmp_path_factory.mktemp("real") / name, **REAL[name])
        return _BUILT[name]
    assert name in DATASETS, f"no synthetic set matches data {data!r}"
    return f"synthetic:{name}"


def test_there_are_configs_for_both_datasets():
    names = {rel(p) for p in FILES}
    assert {f"{ds}/{name}" for ds in DATASETS for name in PAPER} <= names
    assert not any(n.startswith("synthetic/") for n in names)  # --set data=synthetic:<dataset> replaces them


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_config_file_is_valid_and_passes_the_dataset_checks_on_synthetic_data(path, tmp_path_factory):
    is_sweep = "sweep" in read_mapping(path)
    cfgs = [r.config for r in load_sweep(path).runs] if is_sweep else [load_config(path)]
    assert cfgs
    data = {c.data for c in cfgs}
    assert len(data) == 1
    overrides = [f"data={synthetic_twin(data.pop(), tmp_path_factory)}"]
    if is_sweep:
        sweep = load_sweep(path, overrides)
        assert [r.setting for r in sweep.runs] == [r.setting for r in load_sweep(path).runs]
        check_runs(sweep.runs, source=str(path))  # what `balm sweep --dry-run` checks: rates, modalities, loss, build
    else:
        check_config(load_config(path, overrides))
    top = path.relative_to(CONFIGS).parts[0]
    if top == "study":  # docs/study.md: several backbones in one sweep, synthetic or real sets
        assert all(c.data.startswith("synthetic:") or c.data in {f"data/{name}" for name in REAL} for c in cfgs)
        return
    for c in cfgs:
        if top in DATASETS or top in REAL:
            assert c.data == f"data/{top}"
        if path.name.startswith("table"):  # Tables 11-12: the five methods side by side
            assert c.backbone in TABLE_BACKBONES
        elif path.name.startswith("missing_baselines"):  # docs/baselines.md: beside MMGCN+BALM
            assert c.backbone in MISSING_BASELINES
        else:
            assert c.backbone in path.name
    if path.name.startswith("missing_baselines"):
        assert {(c.backbone, c.method) for c in cfgs} == {(b, "none") for b in MISSING_BASELINES} | {("mmgcn", "balm")}
        assert all(c.backbone_options.get("reconstruction", 0) == 0 for c in cfgs)
        assert sorted({c.seed for c in cfgs}) == list(range(5)) and len({json.dumps(c.rates, sort_keys=True)
                                                                        for c in cfgs}) == 6
    if path.name.startswith("table"):
        assert {(c.backbone, c.method) for c in cfgs} == {(b, "none") for b in ("micga", "sdrgnn", "gcnet")} | {
            ("mmgcn", "balm"), ("mmdfn", "balm")}
        assert all(c.backbone_options.get("reconstruction", 0) == 0 for c in cfgs)  # no model sees complete data
        assert sorted({c.seed for c in cfgs}) == list(range(5))


@pytest.mark.parametrize("ds", DATASETS)
def test_sweeps_inherit_their_backbones_train_config(ds):
    """A paper sweep runs its backbone's published hyper-parameters (the train config it inherits),
    changed only in the keys the sweep varies or the file itself sets."""
    for path in sorted((CONFIGS / ds).glob("*-*.yaml")):
        backbone = path.name.split("-")[0]
        own = path.read_text()
        assert f"base: {backbone}.yaml" in own
        base = load_config(path.parent / f"{backbone}.yaml").to_dict()
        sweep = load_sweep(path)
        for run in sweep.runs:
            changed = {k for k, v in run.config.to_dict().items() if v != base[k]}
            allowed = {k.split(".")[0] for k in run.setting} | {k for k in sweep.base if f"\n{k}:" in own}
            assert changed <= allowed, (path.name, changed - allowed)


@pytest.mark.parametrize("name", DATASETS)
def test_compare_sweeps_run_every_method_at_its_own_noise_setting(name):
    """configs/compare/README.md: 7 methods x 2 backbones x 6 IMR permutations x 5 seeds; OGM-GE and
    Ada2I keep their gradient noise, the BALM family runs at the library default (off)."""
    sweep = load_sweep(CONFIGS / "compare" / "synthetic" / f"{name}-late_fusion-mmgcn.yaml")
    cfgs = [r.config for r in sweep.runs]
    assert len(cfgs) == 420
    methods = {"none", "balm", "balm-d", "balm-s", "ogm-ge", "cggm", "ada2i"}
    assert {(c.backbone, c.method) for c in cfgs} == {(b, m) for b in ("late_fusion", "mmgcn") for m in methods}
    assert {c.seed for c in cfgs} == set(range(5)) and len({json.dumps(c.rates, sort_keys=True) for c in cfgs}) == 6
    for c in cfgs:
        assert c.noise is (c.method in ("ogm-ge", "ada2i", "none", "cggm"))
    assert {r.setting["cases"] for r in sweep.runs} == methods


@pytest.mark.parametrize("ds", DATASETS)
def test_mmdfn_configs_use_the_balm_authors_mmdfn(ds, tmp_path_factory):
    """No gates, a context GRU on text only, speaker GRUs weighted audio 3 / visual 0 / text 1
    (MM-DFN/scripts/train_*.sh of the BALM authors), focal loss on IEMOCAP, MSE on MOSEI; the
    built model has exactly those parts."""
    import torch

    from balm.experiments.model import build_model, model_meta
    from balm.experiments.prepare import prepare_data

    files = sorted((CONFIGS / ds).glob("mmdfn*.yaml"))
    assert len(files) == 3
    for path in files:
        data = read_mapping(path)
        data.pop("sweep", None)
        opts = data["backbone_options"]
        assert opts["gated"] is False, rel(path)
        assert opts["context_rnn"] == {"audio": False, "text": True, "visual": False}, rel(path)
        assert opts["speaker_weight"] == {"audio": 3.0, "text": 1.0, "visual": 0.0}, rel(path)
        assert data["loss"] == ("focal" if ds == "iemocap" else "mse"), rel(path)
    cfg = load_config(CONFIGS / ds / "mmdfn.yaml", [f"data=synthetic:{ds}", "method=none"])
    model, _ = build_model(cfg, model_meta(prepare_data(cfg)), torch.device("cpu"))
    enc = model.backbone.encoders
    assert [enc[m].context is not None for m in ("audio", "text", "visual")] == [False, True, False]
    assert [enc[m].speaker is not None for m in ("audio", "text", "visual")] == [True, True, False]
    assert enc["audio"].speaker_weight == 3.0 and enc["text"].speaker_weight == 1.0
    assert model.backbone.gated is False


@pytest.mark.parametrize("path", FILES, ids=rel)
def test_every_config_resolves_to_the_papers_mask_operator(path):
    # the library's default is `exact`; the reproduction and study configs keep the paper's
    # operator, so the run ids (and numbers) documented with them are what the commands give
    is_sweep = "sweep" in read_mapping(path)
    cfgs = [r.config for r in load_sweep(path).runs] if is_sweep else [load_config(path)]
    assert {c.mask_strategy for c in cfgs} == {"paper"}, rel(path)
