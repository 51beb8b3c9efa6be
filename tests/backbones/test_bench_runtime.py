"""benchmarks/bench_runtime.py's run-time estimates: the staged models' stage epochs from each run's
options (or the backbone's defaults), and every run of the IEMOCAP missing-baselines sweep covered by
the committed measurements."""

import json
from pathlib import Path

import pytest
from backbone_batches import load_bench

from balm.experiments.config import Config

ROOT = Path(__file__).resolve().parents[2]
bench = load_bench("bench_runtime")


def _cfg(backbone, epochs=60, **options):
    return Config.from_dict({"data": "synthetic:iemocap", "backbone": backbone, "method": "none",
                             "epochs": epochs, "backbone_options": options})


@pytest.mark.parametrize("cfg, expected", [
    (_cfg("mmin", pretrain_epochs=20), (20, 60)),
    (_cfg("mmin"), (20, 60)),                                   # MMIN's default pretrain_epochs
    (_cfg("mmin", pretrain_epochs=0), (0, 60)),
    (_cfg("momke", epochs=50, experts_epochs=7), (7, 50)),      # router_epochs None: the config's epochs
    (_cfg("momke", experts_epochs=7, router_epochs=9), (7, 9)),
    (_cfg("mce", epochs=30), (20, 30)),                         # MCE's default unimodal_epochs
])
def test_stage_epochs_of_a_run(cfg, expected):
    assert bench.stage_epochs(cfg) == expected


def test_run_seconds_adds_each_stage_at_its_own_rate():
    measured = {"iemocap:mmin:none": {"fixed_cpu_s": 5.0, "epoch_cpu_s": 2.0, "stage_epoch_cpu_s": [0.5, 2.0]},
                "iemocap:mmgcn:balm": {"fixed_cpu_s": 3.0, "epoch_cpu_s": 1.5}}
    secs, key = bench.run_seconds(_cfg("mmin", epochs=60, pretrain_epochs=20), measured)
    assert key == "iemocap:mmin:none" and secs == pytest.approx(5.0 + 20 * 0.5 + 60 * 2.0)
    plain = Config.from_dict({"data": "synthetic:iemocap", "backbone": "mmgcn", "method": "balm", "epochs": 80})
    assert bench.run_seconds(plain, measured) == (pytest.approx(3.0 + 80 * 1.5), "iemocap:mmgcn:balm")
    assert bench.run_seconds(_cfg("momke"), measured) is None


def test_committed_measurements_cover_the_missing_baselines_sweep():
    from balm.experiments.sweep import load_sweep

    rows = json.loads((ROOT / "benchmarks" / "results" / "runtime.json").read_text())
    measured = {r["key"]: r for r in rows}
    runs = load_sweep(ROOT / "configs" / "iemocap" / "missing_baselines.yaml").runs
    estimates = [bench.run_seconds(run.config, measured) for run in runs]
    assert len(runs) == 210 and all(e is not None and e[0] > 0 for e in estimates)


def test_targets_name_each_figure_and_whether_it_is_met():
    rows = [{"key": "iemocap:mmgcn:balm", "epoch_cpu_s": 2.0, "run_cpu_s": 150.0, "peak_rss_mb": 900.0},
            {"key": "iemocap:mmdfn:balm", "epoch_cpu_s": 5.0, "run_cpu_s": 400.0, "peak_rss_mb": 1000.0},
            {"key": "iemocap:gcnet:balm", "epoch_cpu_s": 2.4, "run_cpu_s": 200.0, "peak_rss_mb": 900.0}]
    lines = bench.targets(rows)
    assert lines[0].startswith("target MM-DFN+BALM / MMGCN+BALM") and "2.50x (target 1.50x) MISSED" in lines[0]
    assert "1000 MB (target 1024 MB) met" in lines[1] and "2.40 (target 2.50) met" in lines[2]
    assert len(lines) == 3  # no IMR line without all six variants
    rows += [{"key": f"iemocap:mmgcn:{v}", "run_cpu_s": 120.0} for v in ("none", "balm-d", "balm-s", "balm-m",
                                                                            "fcm-only")]
    imr = bench.targets(rows, workers=2)[-1]
    # 30 runs of each of six variants: (5 x 120 + 150) x 30 / 3600 / 2 = 3.125 h
    assert imr.startswith("target IMR variants table") and "3.12 h (target 1.00 h) MISSED" in imr


def test_throughput_sweep_is_the_config_over_seeds(tmp_path):
    """bench_sweep_throughput's sweep: ``runs`` seeds of the given config, its other keys kept."""
    from balm.experiments.config import load_config
    from balm.experiments.sweep import load_sweep

    tp = load_bench("bench_sweep_throughput")
    config = ROOT / "configs" / "iemocap" / "mmgcn.yaml"
    spec = tp.sweep_file(tmp_path, config, runs=3, epochs=4, device="cpu", data="synthetic:iemocap")
    runs = load_sweep(spec).runs
    base = load_config(config, ["data=synthetic:iemocap"])
    assert sorted(r.config.seed for r in runs) == [0, 1, 2]
    for r in runs:
        assert (r.config.epochs, r.config.device, r.config.early_stopping, r.config.checkpoint) == (4, "cpu", 0, False)
        assert (r.config.backbone, r.config.method, r.config.lr, r.config.rates) == (
            base.backbone, base.method, base.lr, base.rates)
