"""Time the real-data builders on full-size synthetic raw files in each published format.

For each data set this writes random raw files in the owners' format (file names,
folders, columns, separators, compression; ``benchmarks/raw_formats.py``) at a stated
scale, then prepares them with ``tfdebias.data.prepare`` in a fresh child process and
records that child's wall time and peak resident memory (``ru_maxrss``). Writing the raw
files is not timed.

Scales (``--scale NAME=FACTOR``; 1.0 = the published size):

* ``kuairec``: 1.0 = big_matrix 12,530,806 rows + small_matrix 4,676,570 rows (the
  target: under 4 GiB and under 10 minutes on 2 cores).
* ``wechat_channels``: 1.0 = user_action 7,317,882 rows, 106,444 feeds with 512-d
  embeddings (default scale 0.25).
* ``tiktok_icme19``: 1.0 = 19,622,340 interactions, 3.7M items with side files (default 0.05).
* ``amazon_reviews/CONFIG``: 1.0 = the 2014 5-core review counts of the config's two
  categories (default config movies_music, 1.7M + 1.1M reviews).
* ``huawei_digix22``: 1.0 = 7,675,517 ads rows + 3,227,732 feeds rows (default 0.25).

Usage::

    python benchmarks/prepare_scale.py                       # KuaiRec at full size
    python benchmarks/prepare_scale.py --data kuairec,wechat_channels,tiktok_icme19,amazon_reviews/movies_music,amazon_reviews/cloth_sport,huawei_digix22

Prints human-readable lines, then ONE JSON object on the last stdout line:
``{"kuairec": {"seconds": ..., "peak_rss_mb": ..., "rows": ..., "rows_per_s": ..., "scale": ...}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BenchmarkError, emit_json, machine, run_json_child  # noqa: E402

#: data set -> default scale
DATASETS = {
    "kuairec": 1.0,
    "wechat_channels": 0.25,
    "tiktok_icme19": 0.05,
    "amazon_reviews": 0.25,
    "huawei_digix22": 0.25,
}
AMAZON_PAIRS = {"movies_music": ("Movies_and_TV", "CDs_and_Vinyl"),
                "cloth_sport": ("Clothing_Shoes_and_Jewelry", "Sports_and_Outdoors"),
                "phone_elec": ("Cell_Phones_and_Accessories", "Electronics")}

CHILD = r"""
import json, resource, sys, time
from tfdebias import data
t0 = time.perf_counter()
b = data.prepare(sys.argv[1], data_dir=sys.argv[2], manual_dir=sys.argv[3])
seconds = time.perf_counter() - t0
rows = {k: v.num_examples for k, v in b.info.splits.items()}
ru = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM is this process's own peak; ru_maxrss also counts the parent's size at fork
try:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
    peak = int(hwm) / 1024
except (OSError, IndexError):
    peak = ru.ru_maxrss / 1024
print(json.dumps({"seconds": round(seconds, 1), "rows_by_split": rows,
                  "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 1),
                  "peak_rss_mb": round(peak, 1)}))
"""


def write_raw(name: str, scale: float, root: Path) -> dict:
    """Write the raw files in a child process (so this parent stays small: a child's peak
    memory must not include the parent's)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--write-raw", name, str(scale), str(root)], check=True)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return {"write_seconds": round(time.perf_counter() - t0, 1), "raw_mb": round(size / 2**20, 1)}


def _write_raw_here(name: str, scale: float, root: Path) -> None:
    import raw_formats

    base, _, config = name.partition("/")
    if base == "kuairec":
        raw_formats.write_kuairec(
            root, n_big=int(12_530_806 * scale), n_small_users=max(2, int(1411 * scale ** 0.5)),
            n_small_items=max(2, int(3327 * scale ** 0.5)), seed=0)
    elif base == "wechat_channels":
        raw_formats.write_wechat(root, n_users=max(10, int(20000 * scale ** 0.5)),
                                 n_feeds=max(10, int(106444 * scale)), n_actions=int(7_317_882 * scale))
    elif base == "tiktok_icme19":
        raw_formats.write_tiktok(root, n_users=max(10, int(70711 * scale ** 0.5)),
                                 n_items=max(10, int(3_687_157 * scale)), n_rows=int(19_622_340 * scale))
    elif base == "amazon_reviews":
        cats = AMAZON_PAIRS[config or "movies_music"]
        reviews = {c: int(raw_formats.AMAZON_5CORE_2014[c] * scale) for c in cats}
        raw_formats.write_amazon(root, list(cats), release="2014", reviews=reviews,
                                 overlap=0.3 if config != "movies_music" else 0.6, reviews_per_item=12)
    elif base == "huawei_digix22":
        raw_formats.write_digix(root, n_users=max(20, int(65000 * scale)), n_ads=int(7_675_517 * scale),
                                n_feeds=int(3_227_732 * scale), n_tasks=max(10, int(35000 * scale ** 0.5)),
                                n_docs=max(10, int(300000 * scale)))
    else:
        raise BenchmarkError(f"no raw writer for {name!r}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--write-raw"]:  # the child of write_raw
        _write_raw_here(argv[1], float(argv[2]), Path(argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="kuairec", help="comma-separated data sets (default kuairec)")
    ap.add_argument("--scale", action="append", default=[], metavar="NAME=FACTOR")
    ap.add_argument("--work", help="folder for raw files and prepared data (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the raw and prepared files")
    args = ap.parse_args(argv)
    scales = {k: float(v) for k, v in (s.split("=", 1) for s in args.scale)}
    work = Path(args.work or tempfile.mkdtemp(prefix="tfdebias-scale-"))
    results = {"machine": machine()}
    try:
        for name in args.data.split(","):
            base = name.split("/")[0]
            if base not in DATASETS:
                raise SystemExit(f"unknown data set {name!r}; expected one of {sorted(DATASETS)}")
            scale = scales.get(name, DATASETS[base])
            raw, out = work / f"raw-{name.replace('/', '_')}", work / f"tfds-{name.replace('/', '_')}"
            shutil.rmtree(out, ignore_errors=True)
            if not raw.exists():
                print(f"[{name}] writing raw files at scale {scale} ...", flush=True)
                info = write_raw(name, scale, raw)
                print(f"[{name}] wrote {info['raw_mb']} MB in {info['write_seconds']} s", flush=True)
            else:
                info = {}
            print(f"[{name}] preparing ...", flush=True)
            load0 = os.getloadavg()[0]
            res = run_json_child([sys.executable, "-c", CHILD, name, str(out), str(raw)])
            res["load_average_before_after"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
            res["output_mb"] = round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20, 1)
            rows = sum(res["rows_by_split"].values())
            res.update(info, rows=rows, scale=scale, rows_per_s=round(rows / res["seconds"], 1))
            print(f"[{name}] {rows:,} rows in {res['seconds']} s wall ({res['cpu_seconds']} CPU s), "
                  f"peak RSS {res['peak_rss_mb']} MB, load average {res['load_average_before_after']}",
                  flush=True)
            results[name] = res
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    emit_json(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
