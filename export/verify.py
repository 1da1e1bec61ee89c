"""Parity check: a fresh Python process that cannot import tfdebias serves the export.

The check is what a TF Serving deployment relies on: the SavedModel carries everything
(graph, weights, signatures), nothing of tfdebias is needed to run it. The child process
(:mod:`tfdebias.export.clean_check`) is ``python -I -S``: isolated mode (no
``PYTHONPATH``, no user site, no current directory) and no ``site`` processing (so the
editable install's ``.pth`` finder never runs). Its ``sys.path`` is this process's path
minus every folder that provides ``tfdebias``. It reports whether ``import tfdebias``
failed; the check fails if it did not.

Example:

>>> report = verify_in_clean_process("models/deepfm/1", rows, model_predictions)  # doctest: +SKIP
>>> report["max_abs_diff"] < 1e-5                                                  # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tfdebias.errors import TfdebiasError

#: the tolerance of the parity check (float32 graph vs. eager Keras, same kernels)
ATOL = 1e-5
#: per compute dtype of the model (``tfdebias train --precision``): in bfloat16 (8
#: significant bits) the SavedModel's graph and Keras' ``predict`` may round
#: intermediate results at different places (an op fused in one is two ops in the
#: other), which moves a probability by a few 1e-3; a wrong input wiring moves it by
#: tenths
ATOLS = {"float32": ATOL, "bfloat16": 1e-2}


def tolerance(model) -> float:
    """The parity-check tolerance for ``model`` (:data:`ATOLS` by its compute dtype)."""
    return ATOLS.get(str(getattr(model, "compute_dtype", "float32")), ATOL)


class VerificationError(TfdebiasError):
    """The exported SavedModel does not reproduce the Keras model (exit code 1)."""

    exit_code = 1


def clean_sys_path(package: str = "tfdebias") -> tuple[list[str], str | None]:
    """This process's ``sys.path`` without the folders that provide ``package``.

    Returns ``(paths, block)``: ``block`` is ``package`` when a folder that provides it
    must stay (a site-packages folder of a regular install, which TensorFlow needs
    too); the child then refuses the name with an import hook instead.
    """
    paths, block = [], None
    for p in sys.path:
        if not p or not os.path.isdir(p):
            continue
        provides = any(os.path.exists(os.path.join(p, c))
                       for c in (package, package + ".py"))
        if provides:
            if os.path.basename(os.path.normpath(p)) in ("site-packages", "dist-packages"):
                paths.append(p)
                block = package
            continue
        paths.append(os.path.abspath(p))
    return paths, block


def verify_in_clean_process(saved_model_dir, columns: dict, expected, *,
                            signature: str = "serving_default", output: str = "prediction",
                            atol: float = ATOL, timeout: float = 300) -> dict:
    """Run ``signature`` of the SavedModel in a clean interpreter on ``columns``.

    Args:
      columns: input name -> numpy array (the signature's inputs; extra keys ignored).
      expected: what the Keras model predicts for those rows, shape ``(n,)`` or ``(n, 1)``.

    Returns the child's report (``max_abs_diff``, ``tfdebias_importable``, ...) with
    ``ok`` added. Raises :class:`VerificationError` when the child fails, could import
    tfdebias, or differs from ``expected`` by more than ``atol``.
    """
    saved_model_dir = Path(saved_model_dir).absolute()
    source = (Path(__file__).with_name("clean_check.py")).read_text()
    paths, block = clean_sys_path()
    with tempfile.TemporaryDirectory(prefix="tfdebias-verify-") as tmp:
        rows = Path(tmp) / "rows.npz"
        np.savez(rows, expected=np.asarray(expected),
                 **{f"x/{k}": np.asarray(v) for k, v in columns.items()})
        spec = {"saved_model": str(saved_model_dir), "rows": str(rows), "signature": signature,
                "output": output, "sys_path": paths, "block": block}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            proc = subprocess.run([sys.executable, "-I", "-S", "-c", source, json.dumps(spec)],
                                  capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise VerificationError(f"the clean-process check of {saved_model_dir} took over "
                                    f"{timeout:.0f} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("TFDEBIAS_CLEAN_CHECK ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise VerificationError(f"the clean-process check of {saved_model_dir} failed "
                                f"(exit {proc.returncode}): " + " | ".join(tail))
    report = json.loads(lines[-1].split(" ", 1)[1])
    report["atol"] = atol
    report["ok"] = (report["tfdebias_importable"] is False and report["shape_ok"]
                    and report["max_abs_diff"] <= atol)
    if report["tfdebias_importable"] is not False:
        raise VerificationError(f"the check process could import tfdebias from "
                                f"{report['tfdebias_importable']}; it is not clean")
    if not report["ok"]:
        raise VerificationError(
            f"SavedModel {saved_model_dir} signature {signature!r} differs from the Keras "
            f"model by {report['max_abs_diff']:.3g} (> {atol:g}) on {report['rows']} rows")
    return report
