"""How long one data seed of each simulator takes to build: simulate, pack, write.

An evidence table regenerates its simulator for every data seed, so a build must be
cheap: the target is at most 15 s per 200,000 rows. Each simulator's config (default
``medium``, the reproduce default) is built into a fresh temporary TFDS data directory
with a data seed that is not cached, and the rows of every split are counted.

    python benchmarks/simulator_build.py [--config medium] [--data-seed 11] [--only NAME ...]

Prints one line per simulator and one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit_json, machine, peak_rss_mb  # noqa: E402

SIMULATORS = ("confounded_ctr", "cross_domain_ctr", "cascade_exposure", "cross_domain_sequences")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="medium")
    p.add_argument("--data-seed", type=int, default=11)
    p.add_argument("--only", nargs="*", default=list(SIMULATORS), choices=SIMULATORS)
    args = p.parse_args()

    from tfdebias import data as tdata

    results = {}
    for name in args.only:
        with tempfile.TemporaryDirectory(prefix="tfdebias-simbuild-") as tmp:
            t0 = time.perf_counter()
            builder = tdata.prepare(f"{name}/{args.config}", data_dir=tmp, data_seed=args.data_seed)
            seconds = time.perf_counter() - t0
        rows = {s: int(i.num_examples) for s, i in builder.info.splits.items()}
        total = sum(rows.values())
        per_200k = seconds / total * 200_000
        results[name] = {"seconds": round(seconds, 2), "rows": total, "splits": rows,
                         "seconds_per_200k_rows": round(per_200k, 2)}
        print(f"{name}/{args.config} seed {args.data_seed}: {total:,d} rows in {seconds:.1f} s "
              f"({per_200k:.1f} s per 200K rows)", flush=True)
    emit_json({"benchmark": "simulator_build", "config": args.config, "target_seconds_per_200k_rows": 15,
               "results": results, "peak_rss_mb": peak_rss_mb(), "machine": machine()})


if __name__ == "__main__":
    main()
