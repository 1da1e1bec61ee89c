"""Shared fixtures. TF logs are quietened and its CPU thread pools sized as the
``tfdebias`` command sizes them; every test that builds data uses a per-session TFDS
data directory so nothing touches ~/tensorflow_datasets."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

from tfdebias.training.threads import configure_cpu_threads  # noqa: E402

# The thread pools `tfdebias` commands use, set before any test starts TensorFlow.
configure_cpu_threads("auto")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfds")
    os.environ["TFDEBIAS_DATA_DIR"] = str(d)
    return str(d)
