"""Time and peak memory of the whole DAMCAR cascade on WeChat-format logs of a given size.

For each size ``USERSxFEEDS`` (default ``2000x1500,20000x100000``: the size of a log on
which the earlier code took 13.7 min and 9.1 GB, and WeChat Channels' size) this

1. writes random raw files in the real WeChat Big Data Challenge 2021 format
   (``wechat_algo_data1/``: ``user_action.csv``, ``feed_info.csv`` and
   ``feed_embeddings.csv`` with **512-d** feed embeddings;
   ``benchmarks/raw_formats.py``), with ``--exposures`` rows per user on average
   (default 100: the DAMCAR paper's WeChat log has 1.64M exposures of 16,904 users, 97
   per user; the raw challenge file has 366, which at 20,000 users is 7.3M rows whose
   per-row 512-d vectors alone fill 15 GB once loaded, beyond a 24 GiB machine whatever
   DAMCAR does). Not timed.
2. prepares them with ``tfdebias.data.prepare("wechat_channels", ...)`` in a fresh child
   process (the builder: CSV parsing, ids, 6:2:2 split, TFRecord shards): wall time and
   peak RSS.
3. runs the cascade end to end in another fresh child process, at a small fixed step
   budget (``--steps RANKER,LABEL,RETRIEVER``, default ``100,50,100`` optimizer steps of
   batch 512: the training cost does not grow with the log, the rest does), each stage
   timed with its own peak RSS (``VmHWM``, reset between stages through
   ``/proc/self/clear_refs``; the child's overall peak is ``ru_maxrss``):

   * ``load``: ``tfdebias.data.load`` (the prepared splits into memory);
   * ``prepare_cascade``: scaling and the per-item feature table;
   * ``eval_set``: users with a held-out positive, the corpus, the masked pairs;
   * ``ranker``: the DeepFM ranker (early-stopped on the valid log loss);
   * ``rows``: :func:`tfdebias.methods.damcar.run_seed` without evaluation for the
     ``--rows`` (default ``BC,DAMCAR``): ranker scores of every train row, the random-walk
     target domain (R=25, H=50), the label generator, each retriever;
   * ``eval/<row>``: :func:`~tfdebias.methods.damcar.cascade_eval` of each retriever with
     the ranker: every user with a held-out positive against the **whole corpus**, top
     200 streamed per block of users, the ranker re-ranking the candidates;
   * ``eval/Popularity``, ``eval/Item-kNN``: the reference rows (retrieval only, as
     ``reproduce damcar --quick`` scores them);
   * ``export`` (with ``--export``): :func:`~tfdebias.methods.damcar.export_cascade` of
     DAMCAR's retriever with the corpus index and the ranker, checked in a clean process.

Usage::

    python benchmarks/damcar_scale.py                                 # both sizes
    python benchmarks/damcar_scale.py --sizes 2000x1500 --exposures 366 --export
    python benchmarks/damcar_scale.py --sizes 20000x100000 --steps 500,250,750

Prints progress and human-readable lines, then ONE JSON object on the last stdout line:
``{"machine": ..., "2000x1500": {"rows": ..., "prepare": {"seconds", "peak_rss_mb"},
"cascade": {"seconds", "peak_rss_mb", "stages": {stage: {"seconds", "peak_rss_mb",
"rss_after_mb"}}, ...}}, ...}``. ``peak_rss_mb`` of a child is its own ``VmHWM`` (a
forked child's ``ru_maxrss`` would include the parent's size at fork).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BenchmarkError, emit_json, last_json, machine  # noqa: E402

DEFAULT_SIZES = "2000x1500,20000x100000"


def parse_size(text: str) -> tuple[int, int]:
    """``"20000x100000"`` -> ``(20000, 100000)`` (users, feeds)."""
    try:
        users, feeds = (int(x.replace("_", "").replace(",", "")) for x in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"a size is USERSxFEEDS, e.g. 2000x1500; got {text!r}") from None
    if users < 10 or feeds < 10:
        raise SystemExit(f"a size needs at least 10 users and 10 feeds; got {text!r}")
    return users, feeds


# ---------------------------------------------------------------------------------------
# The children: write raw files, prepare, run the cascade
# ---------------------------------------------------------------------------------------


def _memory() -> dict:
    """This process's resident memory now and its peak since the last reset, in MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return out


def _reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Stages:
    """Times each stage of the child and records its peak RSS (progress on stdout)."""

    def __init__(self):
        self.stages: dict = {}
        self.per_stage_peak = _reset_peak()
        self._t0 = time.perf_counter()

    def run(self, name: str, fn, *args, **kwargs):
        print(f"  {name} ...", flush=True)
        _reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        mem = _memory()
        rec = {"seconds": round(time.perf_counter() - t0, 1),
               "cpu_seconds": round(time.process_time() - c0, 1),
               "peak_rss_mb": mem.get("VmHWM"), "rss_after_mb": mem.get("VmRSS")}
        self.stages[name] = rec
        print(f"  {name}: {rec['seconds']} s ({rec['cpu_seconds']} CPU s), peak RSS "
              f"{rec['peak_rss_mb']} MB, RSS after {rec['rss_after_mb']} MB "
              f"[{time.perf_counter() - self._t0:.0f} s so far]", flush=True)
        return out


def child_write_raw(users: int, feeds: int, exposures: int, root: Path) -> None:
    import raw_formats

    raw_formats.write_wechat(root, n_users=users, n_feeds=feeds, n_actions=users * exposures,
                             emb_dim=512)


def child_prepare(data_dir: str, manual_dir: str) -> None:
    import json
    import resource

    from tfdebias import data

    t0 = time.perf_counter()
    b = data.prepare("wechat_channels", data_dir=data_dir, manual_dir=manual_dir)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rows = {k: v.num_examples for k, v in b.info.splits.items()}
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 1),
                      "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 1),
                      "peak_rss_mb": _memory().get("VmHWM"), "rows_by_split": rows}))


def child_cascade(data_dir: str, manual_dir: str, steps: tuple, rows: tuple, export: bool,
                  out_dir: str, cpu_threads: str) -> None:
    import json

    from tfdebias.training import configure_cpu_threads

    configure_cpu_threads(cpu_threads)
    from tfdebias import data as tdata
    from tfdebias.methods import damcar as D

    st = Stages()
    t_all, c_all = time.perf_counter(), time.process_time()
    splits, schema = st.run("load", tdata.load, "wechat_channels", data_dir=data_dir,
                            manual_dir=manual_dir)
    data = st.run("prepare_cascade", D.prepare_cascade, splits, schema)
    del splits
    es = st.run("eval_set", D.eval_set, data.splits, data.label, data.item_names)
    budget = D.Budget(ranker_steps=steps[0], label_steps=steps[1], retrieval_steps=steps[2])
    settings = D.Settings()
    ranker = st.run("ranker", D.train_ranker, data, settings.ranker, 0, budget)
    res = st.run("rows", D.run_seed, data, 0, settings, budget, rows=rows, ranker=ranker,
                 evaluate=False, keep_models=True)
    info = {"target_pairs": res["info"]["target"].get("target_pairs"),
            "tdg_seconds": round(res["info"]["tdg_seconds"], 1),
            "ranker_test_auc": res["info"]["ranker"].get("test_auc")}
    metrics = {}
    for row in rows:
        per_user = st.run(f"eval/{row}", D.cascade_eval,
                          D.retriever_scorer(res["models"][row], es), ranker, es)
        metrics[row] = {k: round(v, 5) for k, v in D.mean_metrics(per_user).items()
                        if k in ("retrieval/R@100", "retrieval/R@200", "ranking/N@10")}
    simple = st.run("simple_scorers", D.simple_scorers, data, es)
    for row, fn in simple.items():
        per_user = st.run(f"eval/{row}", D.cascade_eval, fn, None, es)
        metrics[row] = {k: round(v, 5) for k, v in D.mean_metrics(per_user).items()
                        if k in ("retrieval/R@100", "retrieval/R@200")}
    if export:
        te = data.splits["test"]
        check = {k: te[k][:256] for k in data.user_names + data.item_names}
        st.run("export", D.export_cascade, res["models"]["DAMCAR"], ranker, data.schema,
               data.corpus(), Path(out_dir) / "export", k=200, check_rows=check,
               scaling=data.scaling)
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "seconds": round(time.perf_counter() - t_all, 1),
        "cpu_seconds": round(time.process_time() - c_all, 1),
        # the child's peak over its whole life: resetting VmHWM between stages also resets
        # ru_maxrss, so the highest stage peak counts too
        "peak_rss_mb": max([round(ru.ru_maxrss / 1024, 1)] + [
            s["peak_rss_mb"] or 0 for s in st.stages.values()]),
        "per_stage_peak": st.per_stage_peak, "stages": st.stages,
        "users_evaluated": int(len(es.users)), "corpus": int(len(es.corpus)),
        "train_rows": int(len(data.splits["train"][data.label])),
        "item_features": list(data.item_names), "metrics": metrics, **info}))


# ---------------------------------------------------------------------------------------
# The parent
# ---------------------------------------------------------------------------------------


#: TensorFlow's start-up log lines (absl, CUDA probing), not echoed as progress
_NOISE = re.compile(r"^([IWE]\d{4} |WARNING: All log messages|\s*self\.data_adapter|.*UserWarning)")


def _rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_child(args: list[str], prefix: str, rss_limit_mb: float | None = None) -> dict:
    """Run this script as a child with ``args``; echo its lines (progress) with
    ``prefix``; return the JSON object of its last line. With ``rss_limit_mb`` a watchdog
    kills the child once its resident memory passes the limit (so that a run that would
    exhaust the machine's memory stops cleanly, without the kernel's OOM killer choosing
    some other process); the result is then ``{"killed": ..., "stage": ...}``."""
    import threading

    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
    killed = {}

    def watch():
        while proc.poll() is None:
            rss = _rss_mb(proc.pid)
            if rss_limit_mb and rss > rss_limit_mb:
                killed["rss_mb"] = round(rss, 1)
                proc.kill()
                return
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    lines, stage = [], None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("  ") and line.rstrip().endswith(" ..."):
            stage = line.strip()[:-4]
        if not line.lstrip().startswith("{") and not _NOISE.match(line):
            print(f"{prefix}{line.rstrip()}", flush=True)
    proc.wait()
    if killed:
        print(f"{prefix}KILLED: resident memory {killed['rss_mb']} MB passed --rss-limit-gb "
              f"in stage {stage!r}", flush=True)
        return {"killed": f"RSS {killed['rss_mb']} MB > limit {rss_limit_mb:.0f} MB",
                "stage": stage, "rss_limit_mb": rss_limit_mb}
    if proc.returncode != 0:
        tail = "".join(lines[-15:])
        raise BenchmarkError(f"child {args[0]} exited with {proc.returncode}:\n{tail}")
    return last_json("".join(lines))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--write-raw"]:
        child_write_raw(int(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4]))
        return 0
    if argv[:1] == ["--prepare"]:
        child_prepare(argv[1], argv[2])
        return 0
    if argv[:1] == ["--cascade"]:
        child_cascade(argv[1], argv[2], tuple(int(s) for s in argv[3].split(",")),
                      tuple(argv[4].split(",")), argv[5] == "1", argv[6], argv[7])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES,
                    help=f"comma-separated USERSxFEEDS (default {DEFAULT_SIZES})")
    ap.add_argument("--exposures", type=int, default=100,
                    help="exposure rows per user on average (default 100, the DAMCAR "
                         "paper's WeChat log: 97)")
    ap.add_argument("--steps", default="100,50,100",
                    help="optimizer steps RANKER,LABEL_GENERATOR,RETRIEVER (default "
                         "100,50,100; reproduce --quick uses 500,250,750)")
    ap.add_argument("--rows", default="BC,DAMCAR",
                    help="retriever rows trained and scored (default BC,DAMCAR)")
    ap.add_argument("--export", action="store_true", help="also time export_cascade")
    ap.add_argument("--cpu-threads", default="auto",
                    help="TensorFlow's CPU thread pools, as `tfdebias --cpu-threads`")
    ap.add_argument("--rss-limit-gb", type=float, default=18.0,
                    help="kill a child whose resident memory passes this many GiB and "
                         "report the stage (default 18; 0 = no limit)")
    ap.add_argument("--work", help="folder for raw and prepared files (default: a temp dir); "
                                   "raw files and prepared data found there are reused")
    ap.add_argument("--keep", action="store_true", help="keep the raw and prepared files")
    args = ap.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    if len(steps) != 3 or min(steps) < 1:
        raise SystemExit(f"--steps is RANKER,LABEL,RETRIEVER (each >= 1), got {args.steps!r}")
    if args.exposures < 1:
        raise SystemExit("--exposures must be >= 1")
    if "DAMCAR" not in args.rows.split(",") and args.export:
        raise SystemExit("--export exports DAMCAR's retriever: keep DAMCAR in --rows")
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    work = Path(args.work or tempfile.mkdtemp(prefix="tfdebias-damcar-scale-"))
    results = {"machine": machine(), "exposures_per_user": args.exposures, "steps": steps,
               "rows": args.rows.split(",")}
    try:
        for users, feeds in sizes:
            key = f"{users}x{feeds}"
            raw, tfds_dir = work / f"raw-{key}-{args.exposures}", work / f"tfds-{key}-{args.exposures}"
            res: dict = {"users": users, "feeds": feeds, "raw_rows": users * args.exposures}
            if not (raw / "wechat_algo_data1" / "feed_embeddings.csv").exists():
                print(f"[{key}] writing raw files ({users * args.exposures:,} actions, {feeds:,} "
                      "feeds with 512-d embeddings; not timed) ...", flush=True)
                t0 = time.perf_counter()
                subprocess.run([sys.executable, __file__, "--write-raw", str(users), str(feeds),
                                str(args.exposures), str(raw)], check=True)
                res["write_seconds"] = round(time.perf_counter() - t0, 1)
            res["raw_mb"] = round(sum(p.stat().st_size for p in raw.rglob("*") if p.is_file())
                                  / 2**20, 1)
            print(f"[{key}] raw files: {res['raw_mb']} MB; preparing (fresh process) ...",
                  flush=True)
            load0 = os.getloadavg()[0]
            limit = args.rss_limit_gb * 1024 or None
            res["prepare"] = run_child(["--prepare", str(tfds_dir), str(raw)], f"[{key}] ", limit)
            if "killed" in res["prepare"]:
                results[key] = res
                continue
            rows = res["prepare"]["rows_by_split"]
            print(f"[{key}] prepare: {sum(rows.values()):,} rows {rows} in "
                  f"{res['prepare']['seconds']} s, peak RSS {res['prepare']['peak_rss_mb']} MB",
                  flush=True)
            print(f"[{key}] cascade (fresh process; steps {steps}, rows {args.rows}) ...",
                  flush=True)
            res["cascade"] = run_child(
                ["--cascade", str(tfds_dir), str(raw), ",".join(map(str, steps)), args.rows,
                 "1" if args.export else "0", str(work / f"out-{key}"), args.cpu_threads],
                f"[{key}] ", limit)
            res["load_average_before_after"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
            c = res["cascade"]
            results[key] = res
            if "killed" in c:
                continue
            top = max(c["stages"].items(), key=lambda kv: kv[1]["peak_rss_mb"] or 0)
            print(f"[{key}] cascade: {c['seconds']} s ({c['cpu_seconds']} CPU s), peak RSS "
                  f"{c['peak_rss_mb']} MB (highest stage: {top[0]}, {top[1]['peak_rss_mb']} MB); "
                  f"{c['users_evaluated']:,} users x {c['corpus']:,} items evaluated; load "
                  f"average {res['load_average_before_after']}", flush=True)
            results[key] = res
            if not args.keep:
                shutil.rmtree(tfds_dir, ignore_errors=True)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    emit_json(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
