"""What the input pipeline costs a training step: ``tfdebias.data.make_dataset`` against
the design it replaced, in one process, on the ``ctr_throughput.py`` workload.

* ``make_dataset``: each epoch's permutation cut into batches by *slicing*, one gather
  per group of like columns (all 26 id columns stacked into one matrix).
* ``batched_indices`` (the previous ``make_dataset``): the permutation's indices batched
  one by one (``Dataset.from_tensor_slices(order).batch(B)``) and one gather per column.
* ``autotuned``: ``make_dataset(..., autotune=True)``, the same stream with
  ``tf.data``'s autotuning on (``AUTOTUNE`` parallelism and prefetch), its default.
* ``cached``: the first epoch's batches replayed from memory (``Dataset.cache()``), the
  floor: no per-batch input work at all.

All of them yield the same batches (``tests/test_pipeline.py`` pins them). One
DeepFM (LazyAdam, 8 steps per call, the thread pools of ``tfdebias train``) trains
epoch after epoch on each pipeline in turn, in a shuffled order per round, so load on
the machine hits all of them alike; the figures are medians over rounds of ms per
step (wall-clock and CPU: a step that waits for its input takes longer for the same
CPU) and of the per-round ratio to ``make_dataset``. It also drains each pipeline
alone inside a ``tf.function`` (no Python per batch) for its CPU cost per batch.

Usage::

    python benchmarks/pipeline_ab.py            # 98,304 rows, 10 rounds (4 min)

The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import ctr_throughput as ct  # noqa: E402


def batched_indices(columns, schema, batch_size, seed=0):
    """The previous ``make_dataset`` (shuffle=True, no weights), kept to measure against."""
    import tensorflow as tf

    n = len(columns["label"])
    feats = {k: tf.constant(v) for k, v in columns.items() if k != "label"}
    y = tf.constant(columns["label"])
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)

    def permutation(_):
        key = tf.stack([tf.constant(seed, tf.int64), epoch])
        return tf.data.Dataset.from_tensor_slices(
            tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key))

    ds = tf.data.Dataset.from_tensors(0).flat_map(permutation)
    ds = ds.apply(tf.data.experimental.assert_cardinality(n)).batch(batch_size)
    ds = ds.map(lambda idx: ({k: tf.gather(v, idx) for k, v in feats.items()}, tf.gather(y, idx)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    ds.epoch = epoch
    return ds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=98_304)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--json", action="store_true", help="accepted; the last line is JSON")
    args = p.parse_args(argv)

    from tfdebias.training.threads import configure_cpu_threads

    pools = configure_cpu_threads("auto")
    import keras
    import tensorflow as tf

    from tfdebias import models
    from tfdebias.data import make_dataset
    from tfdebias.optimizers import make_optimizer

    data = ct.make_data(args.rows, 1_000, 26, 10_000, 2024)
    schema, columns = ct.schema_and_columns(data["x_train"], data["y_train"], 10_000)
    current = make_dataset(columns, schema, batch_size=args.batch_size, shuffle=True)
    cached = current.cache()
    for _ in cached:  # fill the cache
        pass
    pipelines = {"make_dataset": current,
                 "autotuned": make_dataset(columns, schema, batch_size=args.batch_size,
                                           shuffle=True, autotune=True),
                 "batched_indices": batched_indices(columns, schema, args.batch_size),
                 "cached": cached}
    steps = -(-args.rows // args.batch_size)

    @tf.function
    def drain(ds):
        total = tf.constant(0.0)
        for batch in ds:
            total += tf.reduce_sum(batch[1])
        return total

    drain_ms = {}
    for name, ds in pipelines.items():
        drain(ds)
        cpu0 = time.process_time()
        for _ in range(3):
            drain(ds)
        drain_ms[name] = round((time.process_time() - cpu0) / (3 * steps) * 1e3, 3)

    keras.utils.set_random_seed(0)
    model = models.build("deepfm", schema, embedding_dim=16, hidden_units=[256, 128])
    model.compile(make_optimizer("lazy_adam", 1e-3), "binary_crossentropy",
                  steps_per_execution=8)
    for ds in pipelines.values():  # trace, warm up
        model.fit(ds, epochs=1, verbose=0)
    times = {name: [] for name in pipelines}
    cpu_times = {name: [] for name in pipelines}
    rng = np.random.default_rng(0)
    for r in range(args.rounds):
        order = list(pipelines)
        rng.shuffle(order)
        for name in order:
            ds = pipelines[name]
            if hasattr(ds, "epoch"):
                ds.epoch.assign(r + 1)
            start, cpu0 = time.perf_counter(), time.process_time()
            model.fit(ds, epochs=1, verbose=0)
            times[name].append((time.perf_counter() - start) / steps * 1e3)
            cpu_times[name].append((time.process_time() - cpu0) / steps * 1e3)
        print(f"round {r + 1}/{args.rounds}: "
              + ", ".join(f"{k} {v[-1]:.2f} ms/step" for k, v in times.items()), flush=True)
    base = np.array(times["make_dataset"])
    out = {
        "benchmark": "pipeline_ab",
        "ms_per_step": {k: round(float(np.median(v)), 3) for k, v in times.items()},
        "max_ms_per_step": {k: round(float(np.max(v)), 3) for k, v in times.items()},
        "cpu_ms_per_step": {k: round(float(np.median(v)), 3) for k, v in cpu_times.items()},
        "ratio_to_make_dataset": {k: round(float(np.median(np.array(v) / base)), 3)
                                  for k, v in times.items()},
        "drain_cpu_ms_per_batch": drain_ms,
        "cpu_threads": [pools.inter, pools.intra],
        "rows": args.rows, "rounds": args.rounds, "batch_size": args.batch_size,
        "machine": _common.machine(),
    }
    _common.emit_json(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
