import os
import subprocess
import sys

import numpy as np
import pytest

from balm.data.errors import DataError
from balm.masking import check_mask, derive_seed, equivalent_smr, realised_rates, shared_rates


def test_realised_rates_hand_computed():
    mask = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 0], [1, 1, 1]], dtype=bool)
    assert np.allclose(realised_rates(mask), [1 / 4, 1 / 4, 2 / 4])
    with pytest.raises(ValueError, match="2-D"):
        realised_rates(np.ones(3, bool))


def test_shared_and_equivalent_rates():
    assert shared_rates(0.4, 3) == (0.4, 0.4, 0.4)
    assert equivalent_smr((0.3, 0.5, 0.7)) == pytest.approx(0.5)
    assert equivalent_smr((0.5, 0.5, 0.7)) == pytest.approx(1.7 / 3)
    with pytest.raises(ValueError, match=r"'rates'.*got 1\.5"):
        shared_rates(1.5, 3)


def test_derive_seed_keys_and_stability_across_processes():
    a = derive_seed(3, "mask", "train")
    assert a == derive_seed(3, "mask", "train")
    assert 0 <= a < 2**63
    others = {derive_seed(3, "mask", "test"), derive_seed(4, "mask", "train"), derive_seed(3, "masktrain"),
              derive_seed(3, "mas", "ktrain"), derive_seed(3, "train", "mask"), derive_seed(3)}
    assert a not in others and len(others) == 6
    code = "from balm.masking import derive_seed; print(derive_seed(3, 'mask', 'train'))"
    outs = set()
    for hs in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hs)
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True).stdout.strip())
    assert outs == {str(a)}
    with pytest.raises(ValueError, match="key 1"):
        derive_seed(1, "a", 2)
    with pytest.raises(ValueError, match="non-negative"):
        derive_seed(-1, "a")


def test_check_mask_accepts_bool_and_01():
    m = check_mask(np.array([[1, 0], [0, 1]], dtype=np.int8))
    assert m.dtype == bool and np.array_equal(m, [[True, False], [False, True]])
    assert check_mask([[True, True]]).shape == (1, 2)


def test_check_mask_rejects_all_missing_rows():
    mask = np.ones((6, 3), bool)
    mask[2] = False
    mask[5] = False
    with pytest.raises(DataError, match=r"masks\.npz.*row 2 .*2 such rows") as e:
        check_mask(mask, source="masks.npz", field="train")
    assert e.value.source == "masks.npz" and e.value.field == "train"


def test_check_mask_rejects_bad_shapes_and_values():
    with pytest.raises(DataError, match="2-D"):
        check_mask(np.ones(3, bool))
    with pytest.raises(DataError, match=r"entry \[1, 0\] is 2"):
        check_mask(np.array([[1, 0], [2, 1]]))
    with pytest.raises(DataError, match="3 columns, expected 2"):
        check_mask(np.ones((4, 3), bool), num_modalities=2)
    with pytest.raises(DataError, match="4 rows, expected 5"):
        check_mask(np.ones((4, 3), bool), num_rows=5)
    with pytest.raises(DataError, match="dtype"):
        check_mask(np.array([["a", "b"]]))
