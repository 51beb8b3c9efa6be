"""Report diagnostics on hand-built run folders: headroom per missing pattern, Shapley table,
the Lemma 1 fit rule and the smoothing of the curves."""

import json

import numpy as np
import pytest

from balm.reporting import diagnostics as RD
from balm.reporting import figures as FG
from balm.reporting.tables import load_results


def _run(root, name, method, used, preds, masks, targets, shapley=None):
    d = root / "runs" / name
    d.mkdir(parents=True)
    np.savez(d / "predictions.npz", targets=np.array(targets), predictions=np.eye(2)[np.array(preds)],
             modalities=np.array(used), **{f"mask_{m}": np.array(masks[m], bool) for m in used})
    res = {"schema": "balm-result/1", "status": "finished", "task": "classification", "test": {"acc": 0.0, "wf1": 0.0},
           "dev": {"acc": 0.0, "wf1": 0.0}, "best_epoch": 0, "epochs_run": 1, "train_seconds": 0.0,
           "realised_rates": {},
           "config": {"backbone": "lf", "method": method, "modalities": None if len(used) == 2 else used, "seed": 0},
           "dataset": {"modalities": ["audio", "text"], "used_modalities": used, "num_classes": 2},
           "files": {"predictions": "predictions.npz"}, "shapley": shapley}
    (d / "result.json").write_text(json.dumps(res))


def test_headroom_compares_joint_and_alone_models_on_the_same_utterances(tmp_path):
    y = [0, 1, 0, 1, 1, 0]
    masks = {"audio": [1, 1, 1, 0, 1, 0], "text": [1, 1, 0, 1, 0, 1]}
    # patterns: 0,1 audio+text; 2,4 audio only; 3,5 text only
    _run(tmp_path, "joint", "none", ["audio", "text"], [0, 1, 1, 1, 0, 1], masks, y)  # audio-only: 0/2 right
    _run(tmp_path, "a", "none", ["audio"], [1, 1, 0, 0, 1, 0], masks, y)  # audio-only utterances 2, 4: 2/2 right
    _run(tmp_path, "t", "none", ["text"], [0, 0, 0, 0, 0, 0], masks, y)  # text-only 3, 5: 1/2 right
    rows = {r["pattern"]: r for r in RD.headroom_rows(load_results(tmp_path))}
    assert set(rows) == {"audio", "text"}  # no audio+text subset run: not a pattern with an alone model
    assert rows["audio"]["n"] == 2 and rows["audio"]["joint_acc"] == 0.0 and rows["audio"]["alone_acc"] == 1.0
    assert rows["audio"]["alone_model"] == "lf" and rows["audio"]["gap_wf1"] == pytest.approx(1.0)
    # text-only utterances 3 (y=1) and 5 (y=0): joint predicts 1, 1 (acc 1/2), alone 0, 0 (acc 1/2)
    assert rows["text"]["joint_acc"] == 0.5 and rows["text"]["alone_acc"] == 0.5
    from balm.experiments.metrics import weighted_f1

    assert rows["text"]["joint_wf1"] == pytest.approx(weighted_f1(np.array([1, 0]), np.array([1, 1]), 2))
    md = RD.headroom_markdown(list(rows.values()), [])
    assert "| lf | audio | 2 | 0.00 | 0.00 | lf | 100.00 | 100.00 | +100.00 |" in md


def test_headroom_skips_a_subset_run_with_other_masks(tmp_path):
    y = [0, 1, 0, 1]
    _run(tmp_path, "joint", "none", ["audio", "text"], [0, 1, 0, 1], {"audio": [1, 0, 1, 0], "text": [0, 1, 1, 1]}, y)
    _run(tmp_path, "a", "none", ["audio"], [0, 1, 0, 1], {"audio": [1, 1, 1, 0]}, y)
    assert RD.headroom_rows(load_results(tmp_path)) == []


def test_shapley_rows_average_over_seeds(tmp_path):
    m = {"audio": [1, 1], "text": [1, 1]}
    for seed, (pa, pt) in enumerate([(0.1, 0.3), (0.3, 0.1)]):
        sh = {"metric": "wf1", "values": {"audio": pa, "text": pt},
              "subsets": {"∅": 0.1, "audio": 0.2, "text": 0.2, "audio+text": 0.1 + pa + pt}}
        _run(tmp_path, f"s{seed}", "none", ["audio", "text"], [0, 1], m, [0, 1], sh)
    runs = load_results(tmp_path)
    for r, seed in zip(runs, (0, 1)):
        r.result["config"]["seed"] = seed
    (row,) = RD.shapley_rows(runs)
    assert row["phi_audio"] == pytest.approx(0.2) and row["phi_text"] == pytest.approx(0.2)
    assert row["v_all"] == pytest.approx(0.5) and row["v_none"] == pytest.approx(0.1) and row["runs"] == 2
    assert "| lf | +20.00 | +20.00 | 50.00 | 10.00 | 2 |" in RD.shapley_markdown([row], [])


def test_lemma1_fits_only_with_three_availability_levels():
    def pts(xs, req=None):
        return [{"model": "m", "modality": "a", "availability": x, "grad_norm": 1.0 + 2.0 * x,
                 "requested_availability": None if req is None else req[i]} for i, x in enumerate(xs)]

    # two levels (with a realised-rate wobble below 1e-3): no slope
    assert FG.lemma1_fits(pts([0.5, 0.50004, 0.3, 0.3])) == []
    (f,) = FG.lemma1_fits(pts([0.3, 0.5, 0.7, 0.5]))
    assert f["slope"] == pytest.approx(2.0) and f["intercept"] == pytest.approx(1.0) and f["levels"] == 3
    # requested rates decide the levels: two requests whose realised rates differ by seed
    assert FG.lemma1_fits(pts([0.29, 0.31, 0.52, 0.48], req=[0.3, 0.3, 0.5, 0.5])) == []
    (f,) = FG.lemma1_fits(pts([0.29, 0.52, 0.71], req=[0.3, 0.5, 0.7]))
    assert f["levels"] == 3 and f["slope"] == pytest.approx(2.0)


def test_smooth_band_is_a_trailing_mean_with_the_window_range():
    y = np.array([1.0, 3.0, 2.0, 6.0])
    m, lo, hi = FG.smooth_band(y, 2)
    assert m.tolist() == [1.0, 2.0, 2.5, 4.0]
    assert lo.tolist() == [1.0, 1.0, 2.0, 2.0] and hi.tolist() == [1.0, 3.0, 3.0, 6.0]
    assert FG._window(21) == 3 and FG._window(600) == 30 and FG._window(2) == 1


def test_head_accuracy_curves_mean_over_runs():
    from types import SimpleNamespace

    runs = [SimpleNamespace(result={"history": [{"dev_head_acc": {"a": 0.2}}, {"dev_head_acc": {"a": 0.4}}]}),
            SimpleNamespace(result={"history": [{"dev_head_acc": {"a": 0.6}}, {"dev_head_acc": {"a": 0.8}},
                                                {"dev_head_acc": {"a": 0.9}}]}),
            SimpleNamespace(result={"history": [{"epoch": 0}]})]  # a method without heads
    c = FG.head_accuracy_curves(runs)
    assert c["a"].tolist() == [[0.2, 0.4], [0.6, 0.8]]
    assert FG.head_accuracy_curves(runs[2:]) == {}
