"""CP2Rec training throughput against its backbone's, on the same data.

Workload: the ``confounded_ctr`` simulator's training split (small config, ~22k rows,
or ``--config paper``), with the estimated propensity column CP2Rec's L_U reads; batch
512 (Table 3's middle), Adam 1e-3, embedding 10, backbone MLP 128-64, no XLA. For each
backbone (DCN, NCF) it times one epoch of ``model.fit`` of

* the plain backbone (``tfdebias.models.build(name)``, binary cross-entropy), and
* CP2Rec on that backbone with each purifier (PROJ, COS, SOLVE): two passes of the
  backbone's tower (y_B and y_U), the purifier and, for SOLVE, CLUB's q_theta.

Every model first trains one warm-up epoch (tracing); then ``--repeats`` rounds each time
one epoch of every model, in a rotating order, so load from other processes hits all
alike; the figure is the median examples/second. Target: CP2Rec >= 0.5x its backbone.

Usage::

    python benchmarks/cp2rec_throughput.py            # ~3 min on 2 idle cores
    python benchmarks/cp2rec_throughput.py --quick    # one repeat

The last line of stdout is one JSON object: ``examples_per_sec`` per model,
``ratio`` (CP2Rec variant / its backbone) and ``min_ratio``, ``meets_target``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_cpu_threads_argument, emit_json, peak_rss_mb  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small", choices=["small", "paper"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--backbones", default="dcn,ncf")
    ap.add_argument("--purifiers", default="proj,cos,solve")
    ap.add_argument("--quick", action="store_true", help="one repeat")
    add_cpu_threads_argument(ap)
    args = ap.parse_args(argv)
    from tfdebias.training.threads import configure_cpu_threads

    threads = configure_cpu_threads(args.cpu_threads)  # before TensorFlow runs an op
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras

    from tfdebias import data as tdata
    from tfdebias.methods.cp2rec import add_propensity
    from tfdebias.training.engine import build_model, compile_model

    name = "confounded_ctr" if args.config == "small" else "confounded_ctr/paper"
    splits, schema = tdata.load(name, ["train", "valid"])
    splits = add_propensity(splits, schema)
    train = splits["train"]
    n = len(train["click"])
    ds = tdata.make_dataset(train, schema, batch_size=args.batch_size, shuffle=True, seed=0)
    sample = next(iter(tdata.make_dataset(splits["valid"], schema, batch_size=64)))[0]

    models = {}
    for bb in [b.strip() for b in args.backbones.split(",") if b.strip()]:
        keras.utils.set_random_seed(0)
        models[bb] = build_model(bb, schema, {"embedding_dim": 10, "hidden_units": [128, 64]}, sample)
        for pur in [p.strip() for p in args.purifiers.split(",") if p.strip()]:
            keras.utils.set_random_seed(0)
            models[f"cp2rec-{pur}-{bb}"] = build_model(
                "cp2rec", schema, {"backbone": bb, "purifier": pur,
                                   "backbone_args": {"hidden_units": [128, 64]}}, sample)
    for m in models.values():
        compile_model(m, keras.optimizers.Adam(1e-3), jit_compile=False)
        m.fit(ds, epochs=1, verbose=0)  # warm-up: tracing
    times = {k: [] for k in models}
    names = list(models)
    repeats = 1 if args.quick else args.repeats
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            t0 = time.perf_counter()
            models[k].fit(ds, epochs=1, verbose=0)
            times[k].append(time.perf_counter() - t0)
            print(f"repeat {r}: {k:22s} {n / times[k][-1]:9.0f} examples/s", flush=True)
    eps = {k: round(n / statistics.median(v), 1) for k, v in times.items()}
    ratio = {k: round(v / eps[k.rsplit("-", 1)[1]], 3) for k, v in eps.items() if k.startswith("cp2rec-")}
    emit_json({
        "benchmark": "cp2rec_throughput", "data": name, "rows": n, "batch_size": args.batch_size,
        "repeats": repeats, "examples_per_sec": eps, "ratio": ratio,
        "min_ratio": min(ratio.values()) if ratio else None,
        "meets_target": bool(ratio) and min(ratio.values()) >= 0.5, "target": 0.5,
        "load_avg": os.getloadavg()[0], "cpus": os.cpu_count(), "peak_rss_mb": peak_rss_mb(),
        "cpu_threads": [threads.inter, threads.intra],
    })


if __name__ == "__main__":
    main()
