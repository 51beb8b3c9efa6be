import os
import subprocess
import sys

import numpy as np
import pytest

from balm.masking import derive_seed, equivalent_smr, realised_rates, shared_rates


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
