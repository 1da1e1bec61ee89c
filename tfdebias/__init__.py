"""tfdebias: debiasing methods for recommendation, in TensorFlow and Keras 3.

>>> import tfdebias
>>> splits, schema = tfdebias.data.load("confounded_ctr", ["train", "valid"])
>>> sorted(splits), schema.label.name
(['train', 'valid'], 'click')
>>> model = tfdebias.models.build("deepfm", schema)
"""

import os as _os

# Keras 3 on the TensorFlow backend is the only supported stack.
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

from tfdebias import errors, schema  # noqa: E402
from tfdebias.schema import Feature, Schema  # noqa: E402


def __getattr__(name):
    # Heavy sub-packages import TensorFlow; load them on first use so that
    # `tfdebias --help` and `import tfdebias.schema` stay fast.
    import importlib

    if name in ("data", "models", "layers", "methods", "evaluation", "training",
                "datasets", "tuning", "export", "optimizers", "cli"):
        return importlib.import_module(f"tfdebias.{name}")
    raise AttributeError(f"module 'tfdebias' has no attribute {name!r}")


__all__ = ["Feature", "Schema", "errors", "schema", "__version__"]
