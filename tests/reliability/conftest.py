import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from exp_helpers import tiny_dir  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return tiny_dir(tmp_path_factory.mktemp("data"), "classification")
