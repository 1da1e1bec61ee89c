"""Export for TF Serving (installed as ``tfdebias.export``).

* :func:`export_run` / ``tfdebias export RUN_DIR --out MODELS_DIR``: a finished run to
  ``MODELS_DIR/NAME/VERSION/`` with warm-up requests, ``signature.txt`` and a
  ``models.config`` (:mod:`tfdebias.export.serving`).
* :func:`export_model`: the same from a model in memory.
* :func:`export_saved_model`: one plain SavedModel, atomically.
* Models add signatures with an optional ``serving_endpoints(schema)`` method
  (:mod:`tfdebias.export.saved_model`).
* :func:`verify_in_clean_process`: the parity check in a process without tfdebias.
"""

from tfdebias.export.saved_model import (  # noqa: F401
    DEFAULT_SIGNATURE,
    PREDICTION,
    collect_endpoints,
    export_saved_model,
    serving_specs,
    write_saved_model,
)
from tfdebias.export.serving import (  # noqa: F401
    ExportResult,
    export_model,
    export_run,
    existing_versions,
    read_signatures,
    read_warmup_requests,
    write_models_config,
)
from tfdebias.export.verify import VerificationError, verify_in_clean_process  # noqa: F401
