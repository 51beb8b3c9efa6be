import pytest

from exp_helpers import base_config, tiny_dir


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return tiny_dir(tmp_path_factory.mktemp("data"), "classification")


@pytest.fixture(scope="session")
def tiny_regression(tmp_path_factory):
    return tiny_dir(tmp_path_factory.mktemp("data"), "regression")


@pytest.fixture(scope="session")
def balm_run(tiny_data, tmp_path_factory):
    """One finished BALM run on the tiny classification data: (config, folder, result)."""
    from balm.experiments.config import Config
    from balm.experiments.trainer import train

    out = tmp_path_factory.mktemp("run")
    cfg = Config.from_dict(base_config(tiny_data, method="balm", epochs=3, seed=3))
    return cfg, out, train(cfg, out, quiet=True)
