"""TFDS builders: simulators (synthetic/) and the real data sets, one folder each."""

from tfdebias.datasets import synthetic  # noqa: F401,E402  (registers the four simulators)
from tfdebias.datasets import kuairec  # noqa: F401,E402  (registers the real data set kuairec)
