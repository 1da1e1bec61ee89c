"""TensorFlow's CPU thread pools, sized so that a training step does not oversubscribe.

TensorFlow runs a step's ready ops side by side on its *inter-op* pool, and splits a
large op (a matmul, a gather of many rows) into shards on its *intra-op* pool; the
op's thread then waits for all its shards. By default both pools have one thread per
core, so when two ops that both split run at once, twice as many threads as cores
want to run. A CTR training step always has such pairs: the dense layers' matmuls
beside the embedding tables' gathers, unique and sparse optimizer updates. On a
small CPU machine the shards then queue behind each other's ops and a descheduled
shard stalls the op that waits for it: on the 2-core benchmark machine
(``benchmarks/ctr_throughput.py``), DeepFM with TensorFlow's pools is slower than with
2 inter-op threads and 1 intra-op thread (figures in ``benchmarks/README.md``).

:func:`configure_cpu_threads` takes a *policy*:

``"auto"`` (what ``tfdebias`` commands and :func:`tfdebias.training.train` use)
    With a visible GPU: TensorFlow's defaults (the model's ops run on the GPU). On a
    CPU-only machine with ``C`` usable cores: ``min(2, C)`` inter-op threads, so the
    dense and the sparse halves of a step run side by side, and ``max(1, C // 2)``
    intra-op threads, so two ops splitting at once fill the cores and no more. A pool
    size given in TensorFlow's own environment variables (``TF_NUM_INTEROP_THREADS``,
    ``TF_NUM_INTRAOP_THREADS``) is kept.
``"tensorflow"``
    TensorFlow's defaults; nothing is set.
``"INTER,INTRA"``
    Those pool sizes, e.g. ``"2,1"``.

The pools can only be sized before TensorFlow's runtime starts (before the first op
runs), so the first call in a process decides: the ``tfdebias`` command makes it with
its ``--cpu-threads`` option before any command runs, :func:`tfdebias.training.train`
makes it with ``"auto"`` for scripts (a no-op after the command's call), and a
script that wants other pools calls :func:`configure_cpu_threads` itself first. A
call after TensorFlow has started changes nothing and says so in its result. The
pool sizes are a matter of speed, never of what a model computes (up to the order of
floating-point additions inside a split op).

Example:

>>> from tfdebias.training.threads import parse_policy
>>> parse_policy("2,1"), parse_policy("auto")
((2, 1), 'auto')
"""

from __future__ import annotations

import dataclasses
import os

from tfdebias.errors import UsageError

POLICIES = ("auto", "tensorflow")
#: TensorFlow's environment variables for the two pools (read when its runtime starts).
ENV = {"inter": "TF_NUM_INTEROP_THREADS", "intra": "TF_NUM_INTRAOP_THREADS"}


@dataclasses.dataclass(frozen=True)
class ThreadPools:
    """The pool sizes in effect after :func:`configure_cpu_threads` (0: TF's default,
    one thread per core) and whether the call that decided them set them."""

    inter: int
    intra: int
    applied: bool
    reason: str


def parse_policy(policy) -> str | tuple[int, int]:
    """``"auto"``, ``"tensorflow"`` or ``(inter, intra)`` from ``"INTER,INTRA"``.

    Raises:
      tfdebias.errors.UsageError: naming the value and what was expected.
    """
    if isinstance(policy, (tuple, list)) and len(policy) == 2:
        parts = list(policy)
    elif isinstance(policy, str) and policy.strip().lower() in POLICIES:
        return policy.strip().lower()
    elif isinstance(policy, str) and "," in policy:
        parts = policy.split(",")
    else:
        parts = None
    try:
        sizes = tuple(int(str(p).strip()) for p in parts) if parts else ()
    except ValueError:
        sizes = ()
    if len(sizes) != 2 or min(sizes) < 1:
        raise UsageError(
            f"cpu_threads must be 'auto', 'tensorflow' or 'INTER,INTRA' with two positive "
            f"integers (e.g. '2,1'), got {policy!r}")
    return sizes


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, as TensorFlow counts them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def auto_sizes(cores: int, has_gpu: bool) -> tuple[int, int] | None:
    """The ``"auto"`` pool sizes ``(inter, intra)`` for ``cores`` CPU cores, or ``None``
    (TensorFlow's defaults) when a GPU runs the model."""
    if has_gpu:
        return None
    return min(2, cores), max(1, cores // 2)


#: The first call's result: later calls return it (the first call decides).
_decided: ThreadPools | None = None


def configure_cpu_threads(policy="auto") -> ThreadPools:
    """Size TensorFlow's inter-op and intra-op pools by ``policy`` (module docstring).

    The first call in a process decides and later calls return its result; call it
    before anything runs a TensorFlow op (afterwards the pools are fixed and the
    result says ``applied=False`` with the reason).
    """
    global _decided
    parsed = parse_policy(policy)  # a bad policy is an error on every call
    if _decided is None:
        _decided = _configure(parsed)
    return _decided


def _configure(parsed) -> ThreadPools:
    import tensorflow as tf

    threading = tf.config.threading

    def current(reason, applied=False):
        return ThreadPools(threading.get_inter_op_parallelism_threads(),
                           threading.get_intra_op_parallelism_threads(), applied, reason)

    if parsed == "tensorflow":
        return current("TensorFlow's defaults")
    keep = set()  # pools whose size stays TensorFlow's to decide
    if parsed == "auto":
        cores = usable_cores()
        sizes = auto_sizes(cores, bool(tf.config.list_physical_devices("GPU")))
        if sizes is None:
            return current("a GPU is visible: TensorFlow's defaults")
        reason = f"auto for {cores} CPU cores"
        keep = {k for k, var in ENV.items() if os.environ.get(var)}  # the user's sizes win
    else:
        sizes, reason = parsed, "as given"
    setters = {"inter": threading.set_inter_op_parallelism_threads,
               "intra": threading.set_intra_op_parallelism_threads}
    try:
        for (k, set_size), size in zip(setters.items(), sizes):
            if k not in keep:
                set_size(size)
    except RuntimeError:  # the runtime has started: the pools are fixed now
        return current("TensorFlow had already started; its pools were left as they are")
    return current(reason, applied=True)
