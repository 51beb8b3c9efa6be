import numpy as np
import pytest

from balm.data.dev_split import ensure_dev
from balm.data.errors import DataError
from balm.data.masks import apply_masks
from balm.masking import derive_seed
from data_builders import tiny_dataset


def test_carve_out_is_seeded_disjoint_and_complete():
    ds = tiny_dataset(seed=1, num_train=25)
    train = ds["train"]
    out = ensure_dev(ds, ratio=0.2, seed=7)
    assert list(out.splits) == ["train", "dev", "test"]
    dev, tr = out["dev"], out["train"]
    assert dev.num_sequences == 5 and tr.num_sequences == 20  # floor(0.2 * 25)
    # exactly the sequences an independent draw with the documented seed picks, in file order
    pick = np.sort(np.random.default_rng(derive_seed(7, "dev")).choice(25, size=5, replace=False))
    assert dev.sequence_ids == [train.sequence_ids[i] for i in pick]
    assert set(dev.sequence_ids).isdisjoint(tr.sequence_ids)
    assert sorted(dev.sequence_ids + tr.sequence_ids) == sorted(train.sequence_ids)
    assert tr.num_utterances + dev.num_utterances == train.num_utterances
    # rows travel with their sequence
    for s, sid in enumerate(dev.sequence_ids):
        src = train.sequence(train.sequence_ids.index(sid))
        np.testing.assert_array_equal(dev.sequence(s)["features"]["audio"], src["features"]["audio"])
        np.testing.assert_array_equal(dev.sequence(s)["labels"], src["labels"])
    assert out["test"] is ds["test"]
    assert out.metadata["dev_split"] == {"from": "train", "ratio": 0.2, "seed": 7, "sequences": 5}
    # same seed, same split; another seed, another split
    assert ensure_dev(ds, 0.2, seed=7)["dev"].sequence_ids == dev.sequence_ids
    assert ensure_dev(ds, 0.2, seed=8)["dev"].sequence_ids != dev.sequence_ids


def test_existing_dev_is_kept_and_bounds():
    ds = ensure_dev(tiny_dataset(seed=2), 0.3, seed=0)
    assert ensure_dev(ds, 0.5, seed=9) is ds
    small = tiny_dataset(seed=3, num_train=3)
    assert ensure_dev(small, 0.1, seed=0)["dev"].num_sequences == 1  # at least one
    with pytest.raises(DataError, match="'dev_ratio'.*\\(0, 1\\)"):
        ensure_dev(tiny_dataset(), 1.0)


def test_masks_move_with_their_rows():
    masked = apply_masks(tiny_dataset(seed=4, num_train=20), (0.3, 0.3, 0.3), seed=1)
    out = ensure_dev(masked, 0.25, seed=2)
    both = np.concatenate([out["train"].mask, out["dev"].mask])
    assert both.shape == masked["train"].mask.shape
    np.testing.assert_allclose(out.mask_info["realised"]["dev"], 1 - out["dev"].mask.mean(axis=0))
    for s, sid in enumerate(out["dev"].sequence_ids):
        src = masked["train"].sequence(masked["train"].sequence_ids.index(sid))
        np.testing.assert_array_equal(out["dev"].sequence(s)["mask"], src["mask"])
