"""The clean-process parity check, run as a script in a fresh interpreter.

:func:`tfdebias.export.verify.verify_in_clean_process` starts
``python -I -S -c <this file's source> SPEC_JSON``: no site-packages ``.pth`` files (so
no editable-install finder), no current directory and no ``PYTHONPATH`` on
``sys.path``; the spec's ``sys_path`` holds the standard library and the folders
TensorFlow lives in, none of which provides ``tfdebias``. This script therefore imports
only the standard library, numpy and TensorFlow. It first records whether ``import
tfdebias`` fails (it must), then loads the SavedModel with ``tf.saved_model.load``,
runs one signature on the held-out rows and prints one JSON line comparing the result
with the Keras model's predictions.

Keep this file free of tfdebias imports: it is executed, never imported.
"""

import json
import sys


def main(spec_json: str) -> dict:
    spec = json.loads(spec_json)
    sys.path[:] = spec["sys_path"]
    if spec.get("block"):
        # tfdebias sits in a folder TensorFlow needs too (a non-editable install):
        # refuse it by name instead of by path.
        import importlib.abc

        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == spec["block"] or name.startswith(spec["block"] + "."):
                    raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
                return None

        sys.meta_path.insert(0, _Block())
    try:
        import tfdebias  # noqa: F401

        importable = getattr(tfdebias, "__file__", None) or "yes"
    except ImportError:
        importable = False

    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(spec["saved_model"])
    fn = loaded.signatures[spec["signature"]]
    data = np.load(spec["rows"])
    names = sorted(fn.structured_input_signature[1])
    inputs = {k: tf.constant(data["x/" + k]) for k in names}
    out = fn(**inputs)[spec["output"]].numpy().astype(np.float64).reshape(-1)
    expected = data["expected"].astype(np.float64).reshape(-1)
    diff = np.abs(out - expected)
    return {
        "tfdebias_importable": importable,
        "tensorflow": tf.__version__,
        "signature": spec["signature"],
        "inputs": names,
        "rows": int(expected.shape[0]),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "shape_ok": bool(out.shape == expected.shape),
    }


if __name__ == "__main__":
    print("TFDEBIAS_CLEAN_CHECK " + json.dumps(main(sys.argv[1])), flush=True)
