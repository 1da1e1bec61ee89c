"""CTR training throughput: tfdebias DeepFM against DeepCTR 0.9.4's DeepFM.

Workload (defaults): 200,000 training rows and 20,000 held-out rows, 26 categorical
fields of 10,000 ids each (Zipf-distributed, id 0 unused as padding), embedding 16,
DNN 256-128, batch 1,024, Adam-family optimizer with learning rate 1e-3, binary
cross-entropy; one warm-up epoch, then two timed epochs. The labels come from a hidden
logistic model (first-order id weights plus an FM-style pairwise term), so the
validation AUC means something and speed is never bought with quality.

Every measurement runs in its own child process (``--worker ...``):

* ``anchor``: DeepCTR 0.9.4 ``DeepFM`` on ``tf-keras`` 2.21 with
  ``TF_USE_LEGACY_KERAS=1`` (DeepCTR is tf.keras-2 code; Keras 3 and tf-keras never
  share a process), fed numpy arrays the way DeepCTR's examples do, tf.keras Adam.
  Regularisation matched to ours (``l2_reg_embedding = l2_reg_linear = 0``;
  DeepCTR's default table-wide L2 would densify its embedding gradients and slow it
  down, which would flatter us) and TensorFlow's own thread pools, as DeepCTR's users
  run it. Two reference anchors: ``deepctr_defaults`` (DeepCTR's default L2) and
  ``deepctr_threads`` (under the thread pools tfdebias picks, see below).
* ``ours``: ``tfdebias.training.build_model("deepfm", schema, {"embedding_dim": 16,
  "hidden_units": [256, 128]}, ...)`` (as ``tfdebias train`` builds it), fed by
  ``tfdebias.data.make_dataset`` (the pipeline of ``tfdebias train``; a new
  permutation every epoch), one variant per child: ``adam`` (Keras Adam),
  ``lazy_adam`` (:class:`tfdebias.optimizers.LazyAdam`, one step per ``tf.function``
  call), ``lazy_adam_spe8`` (LazyAdam, ``steps_per_execution=8``: what ``tfdebias
  train`` does by default, the headline), ``lazy_adam_jit`` (LazyAdam with
  ``jit_compile=True``), and optionally ``lazy_adam_spe8_bf16`` (the same with
  ``tfdebias train --precision mixed_bfloat16``: bfloat16 compute, float32 variables,
  optimizer and loss; :mod:`tfdebias.precision`), ``adam_jit``, ``adam_spe8``,
  ``adagrad``, ``sgd``. Each child first sizes TensorFlow's CPU thread pools as
  ``tfdebias train`` does (:func:`tfdebias.training.configure_cpu_threads`, policy
  ``auto``: 2 inter-op threads and one intra-op thread per 2 cores on a CPU-only
  machine), except ``lazy_adam_spe8_tfthreads``, the headline under TensorFlow's
  default pools.
* ``pipeline``: the same input pipeline alone (no model, :func:`make_pipeline`: each
  epoch's shuffled index permutation cut into batches, one gather of the stacked id
  columns per batch, prefetch), iterated in Python for the same epochs.

Anchor and variants are interleaved (the order rotates every repeat) and repeated, so
load from other processes on the machine hits all of them alike; the figures are
medians over repeats. The data is generated once (fixed seed) into a temporary
``.npz`` that every child reads.

Usage::

    python benchmarks/ctr_throughput.py --json            # full run (12 min, 2 idle cores)
    python benchmarks/ctr_throughput.py --quick --json    # smoke run (small data)

The last line of stdout is one JSON object: ``examples_per_sec`` (the headline
variant's median), ``pipeline_examples_per_sec``, ``anchor`` (``null`` with
``anchor_error`` if DeepCTR could not run), ``speedup_vs_anchor``, per-variant figures
(``variants``), validation AUCs (``auc``), ``peak_rss_mb`` and the workload/machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

ANCHOR_PACKAGE = "deepctr==0.9.4"
VARIANTS = {
    # name: (optimizer name for tfdebias.optimizers.make_optimizer, jit_compile,
    #        steps_per_execution, precision (TrainConfig.precision, tfdebias.precision),
    #        CPU thread-pool policy for tfdebias.training.configure_cpu_threads)
    "adam": ("adam", False, 1, "float32", "auto"),
    "lazy_adam": ("lazy_adam", False, 1, "float32", "auto"),
    "lazy_adam_spe8": ("lazy_adam", False, 8, "float32", "auto"),
    "lazy_adam_spe8_tfthreads": ("lazy_adam", False, 8, "float32", "tensorflow"),
    "lazy_adam_spe8_bf16": ("lazy_adam", False, 8, "mixed_bfloat16", "auto"),
    "lazy_adam_jit": ("lazy_adam", True, 1, "float32", "auto"),
    "adam_jit": ("adam", True, 1, "float32", "auto"),
    "adam_spe8": ("adam", False, 8, "float32", "auto"),
    "adagrad": ("adagrad", False, 1, "float32", "auto"),
    "sgd": ("sgd", False, 1, "float32", "auto"),
}
DEFAULT_VARIANTS = ("adam", "lazy_adam", "lazy_adam_spe8", "lazy_adam_spe8_tfthreads",
                    "lazy_adam_spe8_bf16", "lazy_adam_jit", "adagrad", "sgd")
QUICK_VARIANTS = ("adam", "lazy_adam", "lazy_adam_spe8")
#: The configuration the headline ``examples_per_sec`` reports: what ``tfdebias
#: train`` does by default (TrainConfig): the workload's optimizer family (Adam) in
#: tfdebias' CTR default form, LazyAdam, 8 steps per compiled call, float32, no XLA
#: (XLA on CPU was slower in every run: it rewrites each sparse scatter into a
#: copy of the whole table), TensorFlow's CPU thread pools sized by the ``auto``
#: policy (:mod:`tfdebias.training.threads`). ``adagrad`` and ``sgd`` are reference
#: points only.
HEADLINE = "lazy_adam_spe8"
#: The anchors, name: (DeepCTR's l2_reg_embedding = l2_reg_linear, thread pools):
#: DeepCTR as its users run it, with regularisation matched to ours and TensorFlow's
#: thread pools (the headline comparison); with DeepCTR's own default regularisation
#: (table-wide L2 1e-5 on embeddings and linear weights); and, for reference, under
#: the thread pools tfdebias' ``auto`` policy picks, so the table shows how much of
#: the speed-up is the pools and how much the model and optimizer.
ANCHORS = {"deepctr": (0.0, "tensorflow"), "deepctr_defaults": (1e-5, "tensorflow"),
           "deepctr_threads": (0.0, "auto")}


# ---------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------
def field_names(fields: int) -> list[str]:
    return [f"C{i + 1}" for i in range(fields)]


def make_data(rows: int, val_rows: int, fields: int, vocab: int, seed: int) -> dict:
    """Synthetic CTR data with labels from a hidden logistic model.

    Ids per field follow a Zipf(1.1) law over ``1..vocab-1`` (a random id order per
    field); ``logit = b + sum_f w_f[x_f] + 0.5 * (||sum_f u_f[x_f]||^2 - sum_f
    ||u_f[x_f]||^2)`` with ``w ~ N(0, 0.25^2)`` and 4-dim ``u ~ N(0, 0.15^2)``
    (an FM's first- and second-order terms); ``label ~ Bernoulli(sigmoid(logit))``.
    """
    rng = np.random.default_rng(seed)
    n = rows + val_rows
    ranks = np.arange(1, vocab, dtype=np.float64)
    p = ranks ** -1.1
    p /= p.sum()
    draws = rng.choice(vocab - 1, size=(n, fields), p=p)            # popularity rank
    perm = np.stack([rng.permutation(vocab - 1) for _ in range(fields)])  # (F, vocab-1)
    ids = perm[np.arange(fields)[None, :], draws] + 1                 # 1..vocab-1
    w = rng.normal(0.0, 0.25, size=(fields, vocab))
    u = rng.normal(0.0, 0.15, size=(fields, vocab, 4))
    cols = np.arange(fields)[None, :]
    first = w[cols, ids].sum(axis=1)
    uu = u[cols, ids]                                                 # (n, F, 4)
    second = 0.5 * ((uu.sum(axis=1) ** 2).sum(axis=1) - (uu ** 2).sum(axis=(1, 2)))
    logit = -1.0 + first + second
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    ids = ids.astype(np.int32)
    return {
        "x_train": ids[:rows], "y_train": y[:rows],
        "x_val": ids[rows:], "y_val": y[rows:],
        "bayes_auc_val": float(_auc(y[rows:], logit[rows:])),
    }


def _auc(y, score) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


# ---------------------------------------------------------------------------------
# children
# ---------------------------------------------------------------------------------
def schema_and_columns(x, y, vocab: int):
    """The benchmark data as a tfdebias data set: a :class:`~tfdebias.schema.Schema`
    (26 categorical fields and the label) and numpy columns, the form
    :func:`tfdebias.data.make_dataset` takes from any TFDS split."""
    from tfdebias.schema import Feature, Schema

    names = field_names(x.shape[1])
    schema = Schema([Feature(n, "categorical", vocab_size=vocab) for n in names]
                    + [Feature("label", "label")])
    columns = {n: np.ascontiguousarray(x[:, i]).astype(np.int64) for i, n in enumerate(names)}
    columns["label"] = y.astype(np.float32)
    return schema, columns


def make_pipeline(x, y, batch_size: int, vocab: int, shuffle=True, seed=0):
    """The input pipeline of ``tfdebias train``: :func:`tfdebias.data.make_dataset` over
    the benchmark's columns (each epoch's permutation cut into batches by slicing, one
    gather of the stacked id columns per batch, prefetch). Returns ``(dataset,
    schema)``; with ``shuffle``, ``dataset.epoch`` picks the epoch's permutation."""
    from tfdebias.data import make_dataset

    schema, columns = schema_and_columns(x, y, vocab)
    return make_dataset(columns, schema, batch_size=batch_size, shuffle=shuffle,
                        seed=seed), schema


def _load(path):
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def worker_pipeline(args) -> dict:
    import tensorflow as tf  # noqa: F401

    data = _load(args.data)
    x, y = data["x_train"], data["y_train"]
    ds, _ = make_pipeline(x, y, args.batch_size, args.vocab, seed=args.seed)
    seconds, cpu_seconds = [], []
    for epoch in range(args.warmup_epochs + args.epochs):
        ds.epoch.assign(epoch)
        start, cpu_start = time.perf_counter(), time.process_time()
        for _batch in ds:
            pass
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    timed = sum(seconds[args.warmup_epochs:])
    return {
        "examples_per_sec": _common.rate(len(y) * args.epochs, timed),
        "examples_per_cpu_sec": _common.rate(len(y) * args.epochs,
                                             sum(cpu_seconds[args.warmup_epochs:])),
        "epoch_seconds": [round(s, 3) for s in seconds],
        "peak_rss_mb": _common.peak_rss_mb(),
    }


def worker_ours(args) -> dict:
    # the thread pools first, as `tfdebias train` does: they are fixed once TF runs an op
    from tfdebias.training.threads import configure_cpu_threads

    optimizer_name, jit, steps_per_execution, precision, threads = VARIANTS[args.variant]
    pools = configure_cpu_threads(threads)

    import keras

    from tfdebias.optimizers import make_optimizer
    from tfdebias.training.engine import SetEpoch, build_model, check_trainable

    # before seeding, as `tfdebias train` does: it imports every model module, and
    # importing keras_rs' embedding module draws from Python's RNG (shifting the weights)
    check_trainable("deepfm", precision)
    data = _load(args.data)
    x, y = data["x_train"], data["y_train"]
    keras.utils.set_random_seed(args.seed)
    ds, schema = make_pipeline(x, y, args.batch_size, args.vocab, seed=args.seed)
    # as `tfdebias train` builds it (the precision's dtype policy on every sub-layer)
    model = build_model("deepfm", schema, {"embedding_dim": args.embedding_dim,
                                           "hidden_units": list(args.dnn)},
                        next(iter(ds))[0], precision=precision)
    model.compile(
        optimizer=make_optimizer(optimizer_name, args.learning_rate),
        loss="binary_crossentropy",
        jit_compile=jit,
        steps_per_execution=steps_per_execution,
    )
    timer = _common.epoch_timer(keras.callbacks.Callback)
    # a fresh permutation every epoch, as `tfdebias train` and DeepCTR's fit(shuffle=True)
    model.fit(ds, epochs=args.warmup_epochs + args.epochs, callbacks=[SetEpoch([ds.epoch]), timer],
              verbose=0)
    timed = sum(timer.seconds[args.warmup_epochs:])
    timed_cpu = sum(timer.cpu_seconds[args.warmup_epochs:])
    val, _ = make_pipeline(data["x_val"], data["y_val"], 4096, args.vocab, shuffle=False)
    scores = model.predict(val, verbose=0).reshape(-1)
    return {
        "examples_per_sec": _common.rate(len(y) * args.epochs, timed),
        "examples_per_cpu_sec": _common.rate(len(y) * args.epochs, timed_cpu),
        "epoch_seconds": [round(s, 3) for s in timer.seconds],
        "auc": round(_auc(data["y_val"], scores), 5),
        "optimizer": type(model.optimizer).__name__,
        "jit_compile": jit,
        "steps_per_execution": steps_per_execution,
        "precision": precision,
        "cpu_threads": [pools.inter, pools.intra],
        "parameters": int(model.count_params()),
        "peak_rss_mb": _common.peak_rss_mb(),
    }


def _import_deepctr_quietly():
    """Import deepctr without its import-time version check, a thread that queries
    PyPI and prints to stdout (which would corrupt the JSON last line)."""
    import requests

    class _NoResponse:
        status_code = None

    requests.get = lambda *a, **k: _NoResponse()  # this child never uses requests
    import deepctr

    return deepctr


def worker_anchor(args) -> dict:
    # Runs with TF_USE_LEGACY_KERAS=1, so tf.keras is tf-keras 2.x here.
    import tensorflow as tf

    if args.threads:  # resolved by the parent (this child need not import tfdebias)
        inter, intra = args.threads
        tf.config.threading.set_inter_op_parallelism_threads(inter)
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    import tf_keras

    deepctr = _import_deepctr_quietly()
    from deepctr.feature_column import SparseFeat
    from deepctr.models import DeepFM

    l2, _ = ANCHORS[args.variant]
    data = _load(args.data)
    x, y = data["x_train"], data["y_train"]
    names = field_names(x.shape[1])
    tf.random.set_seed(args.seed)
    columns = [SparseFeat(n, vocabulary_size=args.vocab, embedding_dim=args.embedding_dim)
               for n in names]
    model = DeepFM(columns, columns, dnn_hidden_units=tuple(args.dnn), l2_reg_linear=l2,
                   l2_reg_embedding=l2, l2_reg_dnn=0.0, dnn_dropout=0.0, task="binary",
                   seed=args.seed)
    model.compile(tf_keras.optimizers.Adam(args.learning_rate), "binary_crossentropy")
    inputs = {n: x[:, i] for i, n in enumerate(names)}
    timer = _common.epoch_timer(tf_keras.callbacks.Callback)
    model.fit(inputs, y, batch_size=args.batch_size, epochs=args.warmup_epochs + args.epochs,
              shuffle=True, callbacks=[timer], verbose=0)
    timed = sum(timer.seconds[args.warmup_epochs:])
    timed_cpu = sum(timer.cpu_seconds[args.warmup_epochs:])
    val = {n: data["x_val"][:, i] for i, n in enumerate(names)}
    scores = model.predict(val, batch_size=4096, verbose=0).reshape(-1)
    return {
        "examples_per_sec": _common.rate(len(y) * args.epochs, timed),
        "examples_per_cpu_sec": _common.rate(len(y) * args.epochs, timed_cpu),
        "epoch_seconds": [round(s, 3) for s in timer.seconds],
        "auc": round(_auc(data["y_val"], scores), 5),
        "versions": {"deepctr": deepctr.__version__, "tf_keras": tf_keras.__version__,
                     "tensorflow": tf.__version__},
        "l2_reg_embedding": l2,
        "cpu_threads": [tf.config.threading.get_inter_op_parallelism_threads(),
                        tf.config.threading.get_intra_op_parallelism_threads()],
        "parameters": int(model.count_params()),
        "peak_rss_mb": _common.peak_rss_mb(),
    }


# ---------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------
def _child_cmd(args, worker, data_path, variant=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", worker, "--data", data_path,
           "--vocab", str(args.vocab), "--embedding-dim", str(args.embedding_dim),
           "--dnn", *map(str, args.dnn), "--batch-size", str(args.batch_size),
           "--learning-rate", str(args.learning_rate), "--epochs", str(args.epochs),
           "--warmup-epochs", str(args.warmup_epochs), "--seed", str(args.seed)]
    if variant:
        cmd += ["--variant", variant]
    if worker == "anchor" and ANCHORS[variant][1] == "auto":
        from tfdebias.training.threads import auto_sizes, usable_cores

        cmd += ["--threads", *map(str, auto_sizes(usable_cores(), has_gpu=False))]
    return cmd


def _anchor_available(python) -> str | None:
    """None if DeepCTR and tf-keras import in a legacy-Keras child, else the reason."""
    import subprocess

    probe = ("import json, sys; sys.path.insert(0, sys.argv[1]); import tf_keras; "
             "from ctr_throughput import _import_deepctr_quietly as q; deepctr = q(); "
             "print(json.dumps({'deepctr': deepctr.__version__, "
             "'tf_keras': tf_keras.__version__}))")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([python, "-c", probe, here], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return (f"DeepCTR anchor cannot run ({last}); install it with "
                f"`pip install {ANCHOR_PACKAGE} tf-keras==2.21.*`")
    got = _common.last_json(proc.stdout)
    if got["deepctr"] != ANCHOR_PACKAGE.split("==")[1]:
        return f"DeepCTR {got['deepctr']} is installed, the anchor is {ANCHOR_PACKAGE}"
    return None


def _say(*parts):
    print(*parts, flush=True)


def run(args) -> dict:
    variants = list(args.variants)
    preference = [args.headline, "lazy_adam_spe8", "lazy_adam", "lazy_adam_jit", "adam",
                  "adam_jit"]
    headline = next((v for v in preference if v in variants), variants[0])
    workload = {
        "rows": args.rows, "val_rows": args.val_rows, "fields": args.fields,
        "vocab": args.vocab, "embedding_dim": args.embedding_dim, "dnn": list(args.dnn),
        "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "warmup_epochs": args.warmup_epochs, "timed_epochs": args.epochs,
        "repeats": args.repeats, "seed": args.seed,
    }
    anchor_error = None if args.no_anchor is False else "skipped (--no-anchor)"
    if anchor_error is None:
        anchor_error = _anchor_available(args.anchor_python)

    with tempfile.TemporaryDirectory(prefix="ctr_throughput_") as tmp:
        start = time.perf_counter()
        data = make_data(args.rows, args.val_rows, args.fields, args.vocab, args.seed)
        path = os.path.join(tmp, "data.npz")
        np.savez(path, **{k: v for k, v in data.items() if k.startswith(("x_", "y_"))})
        _say(f"data: {args.rows} + {args.val_rows} rows, {args.fields} fields x {args.vocab} "
             f"ids, positive rate {data['y_train'].mean():.3f}, hidden-model AUC "
             f"{data['bayes_auc_val']:.4f} ({time.perf_counter() - start:.1f}s)")

        jobs = [("ours", v) for v in variants]
        if anchor_error is None:
            jobs = [("anchor", a) for a in args.anchors] + jobs
        results: dict[str, list[dict]] = {name: [] for _, name in jobs}
        errors: dict[str, str] = {}
        pipeline = None
        for rep in range(args.repeats):
            shift = rep % len(jobs)
            for kind, name in jobs[shift:] + jobs[:shift]:
                if name in errors:
                    continue
                env = {"TF_USE_LEGACY_KERAS": "1"} if kind == "anchor" else {}
                python = args.anchor_python if kind == "anchor" else sys.executable
                cmd = _child_cmd(args, kind, path, name)
                cmd[0] = python
                try:
                    got = _common.run_json_child(cmd, env=env, timeout=args.child_timeout)
                except _common.BenchmarkError as e:
                    errors[name] = str(e)
                    _say(f"[{rep + 1}/{args.repeats}] {name}: FAILED {str(e).splitlines()[-1]}")
                    continue
                got["repeat"] = rep
                results[name].append(got)
                _say(f"[{rep + 1}/{args.repeats}] {name:24s} {got['examples_per_sec']:>8.0f} "
                     f"ex/s {got['examples_per_cpu_sec']:>8.0f} ex/cpu-s  AUC {got['auc']:.4f}"
                     f"  epochs {got['epoch_seconds']}  RSS {got['peak_rss_mb']:.0f} MiB")
            if rep == 0:
                try:
                    pipeline = _common.run_json_child(
                        _child_cmd(args, "pipeline", path), timeout=args.child_timeout)
                    _say(f"[{rep + 1}/{args.repeats}] {'pipeline':24s} "
                         f"{pipeline['examples_per_sec']:>8.0f} ex/s "
                         f"{pipeline['examples_per_cpu_sec']:>8.0f} ex/cpu-s")
                except _common.BenchmarkError as e:
                    errors["pipeline"] = str(e)

    def summary(runs):
        if not runs:
            return None
        return {
            "examples_per_sec": round(_common.median([r["examples_per_sec"] for r in runs]), 1),
            "runs": [r["examples_per_sec"] for r in runs],
            "examples_per_cpu_sec": round(
                _common.median([r["examples_per_cpu_sec"] for r in runs]), 1),
            "auc": round(float(np.mean([r["auc"] for r in runs])), 5),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            **{k: runs[0][k] for k in ("optimizer", "jit_compile", "steps_per_execution",
                                       "precision", "cpu_threads", "parameters",
                                       "versions", "l2_reg_embedding") if k in runs[0]},
        }

    ours = {v: summary(results[v]) for v in variants}
    anchors = {a: summary(results.get(a, [])) for a in args.anchors}
    for a, summ in anchors.items():
        if summ is not None:
            pools = ("TF's thread pools" if ANCHORS[a][1] == "tensorflow" else
                     "thread pools {}/{}".format(*summ["cpu_threads"]))
            summ["name"] = (f"DeepCTR {ANCHOR_PACKAGE.split('==')[1]} DeepFM (tf-keras, Adam, "
                            f"L2 {summ['l2_reg_embedding']:g}, {pools})")
    anchor = anchors.get("deepctr")
    if anchor is None and anchor_error is None:
        anchor_error = errors.get("deepctr", "no anchor run (not in --anchors)")
    head = ours.get(headline)

    def speedup(name, key="examples_per_sec", base_name="deepctr"):
        # Median over repeats of (ours / anchor) within the same repeat: both ran
        # back to back under the same load, so the ratio is steadier than either rate.
        base = {r["repeat"]: r[key] for r in results.get(base_name, [])}
        ratios = [r[key] / base[r["repeat"]] for r in results[name] if r["repeat"] in base]
        return round(_common.median(ratios), 3) if ratios else None

    speedups = {v: speedup(v) for v in variants if ours[v] and anchor}
    cpu_speedups = {v: speedup(v, "examples_per_cpu_sec") for v in variants
                    if ours[v] and anchor}
    rss = [s["peak_rss_mb"] for s in list(ours.values()) + list(anchors.values()) + [pipeline]
           if s]
    return {
        "benchmark": "ctr_throughput",
        "quick": bool(args.quick),
        "headline": headline,
        "examples_per_sec": head["examples_per_sec"] if head else None,
        "pipeline_examples_per_sec": pipeline["examples_per_sec"] if pipeline else None,
        "pipeline_examples_per_cpu_sec": (pipeline["examples_per_cpu_sec"] if pipeline
                                          else None),
        "anchor": anchor,
        "anchor_error": anchor_error if anchor is None else None,
        "anchor_defaults": anchors.get("deepctr_defaults"),
        "anchor_threads": anchors.get("deepctr_threads"),
        # the same ratios against DeepCTR under tfdebias' thread pools (reference)
        "speedups_vs_anchor_threads": {v: speedup(v, base_name="deepctr_threads")
                                       for v in variants if ours[v]},
        "speedup_vs_anchor": speedups.get(headline),
        "speedups_vs_anchor": speedups,
        "cpu_speedups_vs_anchor": cpu_speedups,
        "variants": ours,
        "auc": {**{v: s["auc"] for v, s in ours.items() if s},
                **{a: s["auc"] for a, s in anchors.items() if s},
                "hidden_model": round(data["bayes_auc_val"], 5)},
        "peak_rss_mb": max(rss) if rss else None,
        "errors": errors,
        "workload": workload,
        "machine": _common.machine(),
    }


def _print_table(out):
    """The human-readable summary (stdout, before the JSON line)."""
    def row(label, summ, ratio, cpu_ratio, note=""):
        if not summ:
            _say(f"{label:24s} {'n/a':>10s}  {note}")
            return
        fmt = lambda r: f"{r:.2f}x" if r else "n/a"  # noqa: E731
        _say(f"{label:24s} {summ['examples_per_sec']:>10.0f} {fmt(ratio):>8s} "
             f"{summ['examples_per_cpu_sec']:>10.0f} {fmt(cpu_ratio):>8s} "
             f"{summ['auc']:>8.4f} {summ['peak_rss_mb']:>8.0f}  {note}")

    _say("")
    _say(f"{'config':24s} {'ex/s':>10s} {'vs anchor':>8s} {'ex/cpu-s':>10s} "
         f"{'vs anchor':>8s} {'val AUC':>8s} {'RSS MiB':>8s}  (medians over repeats; "
         "ratios: median of same-repeat ratios)")
    anchor = out["anchor"]
    row("deepctr (anchor)", anchor, 1.0 if anchor else None, 1.0 if anchor else None,
        "" if anchor else f"({out['anchor_error']})")
    for key, label, note in [
            ("anchor_defaults", "deepctr L2=1e-5", "DeepCTR's default regularisation"),
            ("anchor_threads", "deepctr threads",
             "DeepCTR under tfdebias' thread pools")]:
        other = out.get(key)
        if other:
            row(label, other,
                other["examples_per_sec"] / anchor["examples_per_sec"] if anchor else None,
                other["examples_per_cpu_sec"] / anchor["examples_per_cpu_sec"]
                if anchor else None, f"{note} (ratios of medians)")
    for v, summ in out["variants"].items():
        row(v, summ, out["speedups_vs_anchor"].get(v), out["cpu_speedups_vs_anchor"].get(v),
            "<- headline" if v == out["headline"] else "")
    if out["pipeline_examples_per_sec"]:
        _say(f"{'input pipeline':24s} {out['pipeline_examples_per_sec']:>10.0f} {'':8s} "
             f"{out['pipeline_examples_per_cpu_sec']:>10.0f}")
    _say(f"hidden-model AUC (upper bound): {out['auc']['hidden_model']:.4f}; "
         f"peak RSS {out['peak_rss_mb']} MiB; machine {out['machine']['cpus']} CPUs")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true",
                   help="accepted for uniformity: the last stdout line is always the JSON")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 20,000 rows, 4,000 held out, 1 repeat")
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--val-rows", type=int, default=20_000)
    p.add_argument("--fields", type=int, default=26)
    p.add_argument("--vocab", type=int, default=10_000)
    p.add_argument("--embedding-dim", type=int, default=16)
    p.add_argument("--dnn", type=int, nargs="+", default=[256, 128])
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs")
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved repeats of every measurement (median reported)")
    p.add_argument("--variants", nargs="+", default=None, choices=sorted(VARIANTS),
                   help=f"default: {' '.join(DEFAULT_VARIANTS)} "
                        f"(--quick: {' '.join(QUICK_VARIANTS)})")
    p.add_argument("--anchors", nargs="+", default=None, choices=sorted(ANCHORS),
                   help="default: all (--quick: deepctr)")
    p.add_argument("--headline", default=HEADLINE, choices=sorted(VARIANTS))
    p.add_argument("--no-anchor", action="store_true", help="skip DeepCTR")
    p.add_argument("--anchor-python", default=sys.executable,
                   help="Python with deepctr==0.9.4 and tf-keras installed")
    p.add_argument("--child-timeout", type=float, default=1800)
    p.add_argument("--seed", type=int, default=2024)
    # internal: one measurement in this (child) process
    p.add_argument("--worker", choices=["ours", "anchor", "pipeline"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--variant", choices=sorted(VARIANTS) + sorted(ANCHORS),
                   help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.val_rows, args.repeats = 20_000, 4_000, 1
    if args.variants is None:
        args.variants = list(QUICK_VARIANTS if args.quick else DEFAULT_VARIANTS)
    if args.anchors is None:
        args.anchors = ["deepctr"] if args.quick else sorted(ANCHORS)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        fn = {"ours": worker_ours, "anchor": worker_anchor, "pipeline": worker_pipeline}
        _common.emit_json(fn[args.worker](args))
        return 0
    out = run(args)
    _print_table(out)
    _common.emit_json(out)
    ok = out["examples_per_sec"] is not None and not (
        set(out["errors"]) - set(ANCHORS)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
