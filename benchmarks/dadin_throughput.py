"""DADIN training throughput against DIN on the same data (target: a ratio >= 0.5).

Workload: the ``cross_domain_ctr`` simulator's train split (both domains, ~41k rows),
the same batches for both models (``tfdebias.data.make_dataset``, batch 2000 = the
paper's), embedding 64 (the paper's), Adam; DIN with its default activation unit and
hidden units [512, 128, 64], DADIN++ with the paper's [512, 128, 64] DNN, both
histories attended and all three domain classifiers. One warm-up epoch each (tracing),
then ``--repeats`` timed epochs, alternating the two models so that load from other
processes hits both alike; figures are medians.

Usage::

    python benchmarks/dadin_throughput.py            # ~2-4 min on 2 busy cores
    python benchmarks/dadin_throughput.py --quick    # 2 timed epochs, embedding 16

The last line of stdout is one JSON object: ``dadin_examples_per_sec``,
``din_examples_per_sec``, ``ratio`` (DADIN / DIN), ``target_ratio`` (0.5), ``meets_target``,
the workload and the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--embedding-dim", type=int, default=None)
    _common.add_cpu_threads_argument(ap)
    args = ap.parse_args(argv)
    from tfdebias.training.threads import configure_cpu_threads

    threads = configure_cpu_threads(args.cpu_threads)  # before TensorFlow runs an op
    repeats = args.repeats or (2 if args.quick else 4)
    emb = args.embedding_dim or (16 if args.quick else 64)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import tfdebias
    from tfdebias.optimizers import make_optimizer
    from tfdebias.training.engine import build_model, compile_model

    splits, schema = tfdebias.data.load("cross_domain_ctr", ["train", "valid"])
    n = len(splits["train"]["click"])
    ds = tfdebias.data.make_dataset(splits["train"], schema, batch_size=args.batch_size,
                                    shuffle=True, seed=0)
    sample = next(iter(ds))[0]
    keras.utils.set_random_seed(0)
    built = {
        "din": build_model("din", schema, {"embedding_dim": emb, "hidden_units": [512, 128, 64]}, sample),
        "dadin": build_model("dadin", schema, {"embedding_dim": emb, "hidden_units": [512, 128, 64]}, sample),
    }
    for m in built.values():
        compile_model(m, make_optimizer("adam", 1e-4))
        m.fit(ds, epochs=1, verbose=0)  # warm-up: tracing
    seconds = {k: [] for k in built}
    for r in range(repeats):
        order = list(built) if r % 2 == 0 else list(built)[::-1]
        for name in order:
            t = time.perf_counter()
            built[name].fit(ds, epochs=1, verbose=0)
            seconds[name].append(time.perf_counter() - t)
    rates = {k: _common.rate(n, _common.median(v)) for k, v in seconds.items()}
    ratio = round(rates["dadin"] / rates["din"], 3)
    print(f"DIN {rates['din']} ex/s, DADIN {rates['dadin']} ex/s, ratio {ratio}")
    _common.emit_json({
        "benchmark": "dadin_throughput", "dadin_examples_per_sec": rates["dadin"],
        "din_examples_per_sec": rates["din"], "ratio": ratio, "target_ratio": 0.5,
        "meets_target": bool(ratio >= 0.5), "epoch_seconds": seconds,
        "params": {k: int(m.count_params()) for k, m in built.items()},
        "workload": {"data": "cross_domain_ctr", "rows": n, "batch_size": args.batch_size,
                     "embedding_dim": emb, "hidden_units": [512, 128, 64], "repeats": repeats},
        "load_avg_1min": round(os.getloadavg()[0], 2), "peak_rss_mb": _common.peak_rss_mb(),
        "cpu_threads": [threads.inter, threads.intra],
        "machine": _common.machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
