"""SavedModel serving latency against the Keras model's ``predict`` on the same rows.

Workload: DeepFM (embedding 16, MLP 256-128) on the ``confounded_ctr`` schema (5 id
fields, 11 dense proxies). By default the model is built from the schema alone (the
weights do not change the latency) and requests are drawn as valid rows of that schema,
so nothing has to be downloaded or prepared; ``--run RUN_DIR`` benchmarks a trained run
on real held-out rows instead.

The model is exported with :func:`tfdebias.export.export_model` (the TF Serving layout
``tfdebias export`` writes), loaded back with ``tf.saved_model.load`` and its
``serving_default`` signature called -- the graph TF Serving runs, minus the RPC. For
batch sizes 1 and 256 it times, request by request, with the same rows:

* ``saved_model``: ``loaded.signatures["serving_default"](**features)``;
* ``keras_predict``: ``model.predict(features, verbose=0)`` (what a Keras user calls);
* ``keras_predict_on_batch``: ``model.predict_on_batch(features)`` (no data adapter).

After ``--warmup`` untimed calls each, ``--requests`` calls per (path, batch size) run in
a rotating order so load from other processes hits every path alike (``model.predict``,
at ~0.3 s a call, only for the first ``--predict-requests``); the figures are the p50
and p99 of the per-call wall time in milliseconds. The JSON records the 1-minute load
average at the start and the end: on a shared machine, read p99 with it.

Usage::

    python benchmarks/serving_latency.py              # ~1 min on 2 idle cores
    python benchmarks/serving_latency.py --quick
    python benchmarks/serving_latency.py --run runs/quickstart/deepfm

The last line of stdout is one JSON object: ``latency_ms[batch][path] = {p50, p99}``,
``speedup_p50`` (keras_predict p50 / saved_model p50) per batch, and ``max_abs_diff``
between the SavedModel and Keras predictions.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit_json, machine, peak_rss_mb  # noqa: E402

BATCHES = (1, 256)


def _rows(schema, n, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for f in schema.inputs:
        if f.dtype == "int64":
            out[f.name] = rng.integers(1, f.vocab_size, (n, *f.shape)).astype("int64")
        else:
            out[f.name] = rng.random((n, *f.shape)).astype("float32")
    return out


def _model_and_rows(run_dir, n):
    import numpy as np

    from tfdebias import models

    if run_dir:
        from tfdebias.export.serving import held_out_columns, read_head
        from tfdebias.training.engine import load_run

        model, config, schema = load_run(run_dir)
        cols = held_out_columns(read_head(config.data, config, rows=n), schema, config)
        return model, schema, {k: np.asarray(v) for k, v in cols.items()}, f"run {run_dir}"
    from tfdebias.datasets.synthetic import confounded_ctr

    schema = confounded_ctr.schema({})
    model = models.build("deepfm", schema, embedding_dim=16, hidden_units=(256, 128))
    rows = _rows(schema, n)
    model({k: v[:4] for k, v in rows.items()}, training=False)
    return model, schema, rows, "deepfm (untrained) on the confounded_ctr/small schema"


def _percentiles(ms):
    import numpy as np

    a = np.asarray(ms)
    return {"p50": round(float(np.percentile(a, 50)), 4), "p99": round(float(np.percentile(a, 99)), 4),
            "mean": round(float(a.mean()), 4), "n": int(a.size)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a finished run directory (default: an untrained DeepFM)")
    ap.add_argument("--requests", type=int, default=300, help="timed calls per path and batch size")
    ap.add_argument("--predict-requests", type=int, default=60,
                    help="timed calls of model.predict (it takes ~0.3 s a call on 2 cores)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="60 timed calls, 5 warm-up")
    args = ap.parse_args(argv)
    if args.quick:
        args.requests, args.predict_requests, args.warmup = 60, 20, 5

    import numpy as np
    import tensorflow as tf

    from tfdebias.export import export_model

    load_start = round(os.getloadavg()[0], 2)
    model, schema, rows, what = _model_and_rows(args.run, 1024)
    n_rows = len(next(iter(rows.values())))
    with tempfile.TemporaryDirectory(prefix="tfdebias-serving-bench-") as tmp:
        res = export_model(model, schema, tmp, name="bench", columns=rows, warmup=False)
        loaded = tf.saved_model.load(str(res.path))
        serve = loaded.signatures["serving_default"]
        names = sorted(serve.structured_input_signature[1])

        requests = {}
        for b in BATCHES:
            starts = np.arange(args.requests + args.warmup) * 7 % max(1, n_rows - b + 1)
            requests[b] = [{k: rows[k][s:s + b] for k in names} for s in starts]
        consts = {b: [{k: tf.constant(v) for k, v in r.items()} for r in reqs]
                  for b, reqs in requests.items()}

        paths = {
            "saved_model": lambda b, i: serve(**consts[b][i])["prediction"].numpy(),
            "keras_predict": lambda b, i: model.predict(requests[b][i], verbose=0),
            "keras_predict_on_batch": lambda b, i: np.asarray(model.predict_on_batch(requests[b][i])),
        }
        # parity on the same rows
        probe = {k: rows[k][:256] for k in names}
        sm = serve(**{k: tf.constant(v) for k, v in probe.items()})["prediction"].numpy()
        kp = model.predict(probe, verbose=0).reshape(-1)
        max_abs_diff = float(np.abs(sm - kp).max())

        times = {b: {p: [] for p in paths} for b in BATCHES}
        for b in BATCHES:
            for p, fn in paths.items():
                for i in range(args.warmup):
                    fn(b, i)
        order = list(paths)
        for i in range(args.warmup, args.warmup + args.requests):
            order = order[1:] + order[:1]
            for b in BATCHES:
                for p in order:
                    if p == "keras_predict" and i >= args.warmup + args.predict_requests:
                        continue
                    t0 = time.perf_counter()
                    paths[p](b, i)
                    times[b][p].append((time.perf_counter() - t0) * 1e3)

    latency = {str(b): {p: _percentiles(v) for p, v in times[b].items()} for b in BATCHES}
    speedup = {str(b): round(latency[str(b)]["keras_predict"]["p50"]
                             / latency[str(b)]["saved_model"]["p50"], 2) for b in BATCHES}
    for b in BATCHES:
        for p in paths:
            q = latency[str(b)][p]
            print(f"batch {b:4d}  {p:24s} p50 {q['p50']:8.3f} ms   p99 {q['p99']:8.3f} ms")
    emit_json({
        "benchmark": "serving_latency",
        "model": what,
        "batch_sizes": list(BATCHES),
        "requests": args.requests,
        "predict_requests": min(args.predict_requests, args.requests),
        "load_average_1m_start_end": [load_start, round(os.getloadavg()[0], 2)],
        "latency_ms": latency,
        "speedup_p50": speedup,
        "max_abs_diff": max_abs_diff,
        "tensorflow": tf.__version__,
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "peak_rss_mb": peak_rss_mb(),
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
