"""The four built-in bias simulators, as TFDS builders (no download needed).

Importing this package registers ``confounded_ctr``, ``cross_domain_ctr``,
``cascade_exposure`` and ``cross_domain_sequences`` with TFDS. Each module also exposes
``schema(params)`` and ``simulate(params)`` for direct, in-memory use; see README.md.
"""

from tfdebias.datasets.synthetic import (  # noqa: F401
    cascade_exposure,
    confounded_ctr,
    cross_domain_ctr,
    cross_domain_sequences,
)
from tfdebias.datasets.synthetic._base import SimulatorBuilder, SimulatorConfig  # noqa: F401
from tfdebias.datasets.synthetic.cascade_exposure import CascadeExposure  # noqa: F401
from tfdebias.datasets.synthetic.confounded_ctr import ConfoundedCtr  # noqa: F401
from tfdebias.datasets.synthetic.cross_domain_ctr import CrossDomainCtr  # noqa: F401
from tfdebias.datasets.synthetic.cross_domain_sequences import CrossDomainSequences  # noqa: F401

#: TFDS name -> simulator module (each has ``schema``, ``simulate``, ``DEFAULTS``, ``CONFIGS``).
SIMULATORS = {
    "confounded_ctr": confounded_ctr,
    "cross_domain_ctr": cross_domain_ctr,
    "cascade_exposure": cascade_exposure,
    "cross_domain_sequences": cross_domain_sequences,
}
