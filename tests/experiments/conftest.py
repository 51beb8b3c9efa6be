import pytest

from exp_helpers import tiny_dir


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return tiny_dir(tmp_path_factory.mktemp("data"), "classification")


@pytest.fixture(scope="session")
def tiny_regression(tmp_path_factory):
    return tiny_dir(tmp_path_factory.mktemp("data"), "regression")
