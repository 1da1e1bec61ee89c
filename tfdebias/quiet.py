"""Keep TensorFlow's start-up chatter off a user's terminal.

Importing TensorFlow 2.21 writes several lines to the process's standard error from
C++ before Python can filter anything (the oneDNN notice, "Could not find cuda drivers",
and on every CPU-only machine ``E0000 ... failed call to cuInit``), and absl's Python
logger adds TFDS's notes. None of it is tfdebias' output. :func:`start_tensorflow`
imports TensorFlow and probes its devices with the process's standard error pointed at
a temporary file; the captured text is shown again only if the start fails (or always
with ``verbose``).

Example:

>>> with quiet_native_stderr() as captured:   # doctest: +SKIP
...     import tensorflow as tf
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool = True):
    """Point file descriptor 2 at a temporary file for the block; yields a callable that
    returns what was written there. On an exception the text is written back to the
    real standard error before the exception propagates."""
    if not enabled:
        yield lambda: ""
        return
    sys.stderr.flush()
    saved = os.dup(2)
    buf = tempfile.TemporaryFile(mode="w+b")
    text = {"value": None}

    def captured() -> str:
        if text["value"] is None:
            buf.flush()
            buf.seek(0)
            return buf.read().decode(errors="replace")
        return text["value"]

    os.dup2(buf.fileno(), 2)
    try:
        yield captured
    except BaseException:
        sys.stderr.flush()
        os.dup2(saved, 2)
        sys.stderr.write(captured())
        raise
    finally:
        sys.stderr.flush()
        text["value"] = captured()
        os.dup2(saved, 2)
        os.close(saved)
        buf.close()


def start_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and probe its devices quietly (unless ``verbose``); later C++ and
    absl messages below ERROR stay hidden too, unless the user set their own levels."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_stderr(enabled=not verbose):
        import tensorflow as tf

        tf.config.list_physical_devices()  # the device probe prints cuInit's error
    if not verbose:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)


__all__ = ["quiet_native_stderr", "start_tensorflow"]
