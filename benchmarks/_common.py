"""Helpers shared by the benchmark scripts: timing, peak memory, the JSON last line,
and running a measurement in a child process.

Nothing here imports TensorFlow or Keras, so a benchmark's parent process can stay
light and spawn children that each load the Keras they need (Keras 3 for tfdebias,
``tf-keras`` for a tf.keras-2 anchor such as DeepCTR); the two never share a process.

Convention: every benchmark (and every child measurement) prints exactly one JSON
object on the **last line of stdout**; human-readable lines may come before it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


class BenchmarkError(RuntimeError):
    """A measurement could not be made (the message says why)."""


def add_cpu_threads_argument(parser) -> None:
    """``--cpu-threads POLICY`` (default ``auto``): the thread pools a training benchmark
    passes to ``tfdebias.training.configure_cpu_threads`` before TensorFlow starts, as
    the ``tfdebias`` command does."""
    parser.add_argument("--cpu-threads", default="auto",
                        help="TensorFlow's CPU thread pools, as `tfdebias --cpu-threads` "
                             "(default auto, what tfdebias commands use)")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux: ru_maxrss is KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":  # bytes there
        rss /= 1024
    return round(rss / 1024, 1)


def emit_json(obj: dict) -> None:
    """Print ``obj`` as one JSON line, last on stdout."""
    sys.stdout.flush()
    print(json.dumps(obj, sort_keys=True, allow_nan=False), flush=True)


def last_json(text: str) -> dict:
    """The JSON object on the last non-empty line of ``text``."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise BenchmarkError("no output")
    try:
        obj = json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise BenchmarkError(f"last line is not JSON ({e}): {lines[-1][:200]!r}") from None
    if not isinstance(obj, dict):
        raise BenchmarkError(f"last line is JSON but not an object: {lines[-1][:200]!r}")
    return obj


def run_json_child(
    cmd: list[str], *, env: dict | None = None, timeout: float | None = None
) -> dict:
    """Run ``cmd``, return the JSON object on its stdout's last line.

    Raises :class:`BenchmarkError` with the tail of stderr if it fails or times out.
    """
    full_env = dict(os.environ)
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    full_env.update(env or {})
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"timed out after {timeout:.0f}s: {' '.join(cmd[-6:])}") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BenchmarkError(f"exit code {proc.returncode}: {tail}")
    return last_json(proc.stdout)


def epoch_timer(callback_base):
    """An instance of a Keras callback that records each epoch's wall and CPU time.

    ``callback_base`` is the ``Callback`` class of whichever Keras the caller uses
    (``keras.callbacks.Callback`` or ``tf_keras.callbacks.Callback``); the timer works
    with both. ``timer.seconds`` (wall) and ``timer.cpu_seconds`` (this process's CPU
    time, all threads: steadier than wall time on a machine others are loading) are
    lists, one float per epoch.
    """

    class EpochTimer(callback_base):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self.cpu_seconds: list[float] = []
            self._start = self._cpu_start = None

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()
            self._cpu_start = time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)
            self.cpu_seconds.append(time.process_time() - self._cpu_start)

    return EpochTimer()


def rate(examples: int, seconds: float) -> float:
    """Examples per second, rounded for printing."""
    return round(examples / seconds, 1) if seconds > 0 else float("nan")


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def machine() -> dict:
    """What ran the benchmark: CPUs usable, platform, Python, UTC date."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "cpus": usable,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
    }
