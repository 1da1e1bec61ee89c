"""AMID training throughput against its backbone, and the 1,000-candidate evaluation rate.

Workload: the ``cross_domain_sequences`` simulator generated in memory (no TFDS build;
``--config small`` by default, ``paper`` for Cloth-Sport sizes), batch 256, embedding
32, the default AMID (N = 64 sampled users per domain since the December 2026 revision, N = 16
before; DR estimator; the batches carry no ``neg_positions``, so ``L_c`` is timed with
the row-target loss, not the every-position one ``tfdebias reproduce amid`` trains
with). ``throughput.json`` in ``docs/results/amid/`` was measured with N = 64. Measured, each in
the same process after a warm-up (the trace is not timed):

* ``backbone_rows_per_s``: training rows/s of the backbone alone (its train step);
* ``amid_lc_rows_per_s``: AMID's ``L_c`` step (Eq. 13, with MIM) on the same batches;
* ``amid_lr_rows_per_s``: AMID's ``L_r`` step (Eq. 15) on batches of ``D``;
* ``ratio_lc`` = amid_lc / backbone (target >= 0.5) and ``ratio_epoch``: rows of the
  observed split per second of a whole AMID epoch (``L_c`` pass + ``L_r`` pass over
  ``D``) over the backbone's;
* ``eval_users_per_s``: users scored per second against 1,000 candidates each (one
  positive + 999 negatives) by ``score_candidates`` (vectorised: one batched call per
  256 users), for the backbone and for AMID.

With ``--as-trained`` it times instead what an evidence table trains: the rows of
``tfdebias reproduce amid`` (the backbone row, + MIM, + AMID, with the tables' sampled
softmax over 32 negatives, every-position or Cloze term and MIM grouping) fitted by
``fit_amid`` for ``--steps`` optimizer steps each, input pipeline included, on
``--config`` (default ``open_world``, the evidence scenario, there). Each row is fitted
twice and the second fit, its steps already traced, is timed: ``table_seconds_per_step``
per row and ``table_ratio`` (the backbone row's seconds over each row's; the +AMID
row's steps mix ``L_c`` and ``L_r`` in a table's proportion).

Usage: ``python benchmarks/amid_throughput.py [--backbone sasrec] [--config small]
[--steps 20] [--repeats 3] [--n-sampled-users N] [--as-trained]``. The last stdout line
is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _common import add_cpu_threads_argument, emit_json, peak_rss_mb  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="sasrec", choices=["gru4rec", "sasrec", "bert4rec"])
    ap.add_argument("--config", default=None, choices=["small", "paper", "open_world"],
                    help="simulator config (default small; open_world with --as-trained)")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed steps per row (default 20; 100 with --as-trained)")
    ap.add_argument("--as-trained", action="store_true",
                    help="time the evidence table's rows as fit_amid trains them")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--eval-users", type=int, default=1024)
    ap.add_argument("--n-sampled-users", type=int, default=None,
                    help="N of MIM (default: the AMID model's, 64)")
    add_cpu_threads_argument(ap)
    args = ap.parse_args(argv)
    args.config = args.config or ("open_world" if args.as_trained else "small")
    args.steps = args.steps or (100 if args.as_trained else 20)
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    from tfdebias.training.threads import configure_cpu_threads

    threads = configure_cpu_threads(args.cpu_threads)  # before TensorFlow runs an op

    import keras
    import numpy as np
    import tensorflow as tf

    from tfdebias import models
    from tfdebias.data import make_dataset, samplers
    from tfdebias.datasets.synthetic import cross_domain_sequences as cds
    from tfdebias.methods import amid

    params = dict(cds.CONFIGS[args.config])
    splits, schema = cds.simulate(params), cds.schema(params)
    if args.as_trained:
        return as_trained(args, splits, schema, threads)
    hist = ["history_a", "history_b"]
    pools = samplers.domain_item_pools(splits, hist)
    sampler = samplers.NegativeSampler(pools)
    bs = args.batch_size

    def batches(cols, n, count=1):
        ds = make_dataset(cols, schema, batch_size=bs, shuffle=True, seed=0, drop_remainder=True,
                          repeat=True)
        ds = samplers.add_negatives(ds, sampler, seed=0, count=count)
        if count == 2:
            ds = ds.map(amid.split_negatives)
        return [b for b, _ in zip(ds, range(n))]

    train_b = batches(splits["train"], args.steps)
    both = {k: np.concatenate([splits["train"][k], splits["unobserved"][k]]) for k in splits["train"]}
    d_b = batches(both, args.steps, count=2)

    keras.utils.set_random_seed(0)
    bb = models.build(args.backbone, schema, embedding_dim=32)
    extra = {} if args.n_sampled_users is None else {"n_sampled_users": args.n_sampled_users}
    am = models.build("amid", schema, backbone=args.backbone, embedding_dim=32, **extra)
    for m in (bb, am):
        amid.build_amid(m, train_b[0][0])
        m.compile(optimizer=keras.optimizers.Adam(1e-3))
        m.optimizer.build(m.trainable_variables)
    am.set_user_bank(splits["train"])
    am.dr_optimizer = keras.optimizers.Adam(1e-4)
    am.dr_optimizer.build(am.trainable_variables)

    def step_fn(model, phase=None):
        if phase is not None:
            model.set_phase(phase)
        return tf.function(model.train_step)

    fns = {"backbone": (step_fn(bb), train_b), "amid_lc": (step_fn(am, 1), train_b)}
    am.set_phase(2)
    fns["amid_lr"] = (tf.function(am.train_step), d_b)

    def rate(fn, data):
        fn(data[0])  # warm-up / trace
        t = time.perf_counter()
        for b in data:
            out = fn(b)
        float(out["loss"])
        return len(data) * bs / (time.perf_counter() - t)

    reps: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(args.repeats):  # interleaved, so load hits all alike
        for k, (fn, data) in fns.items():
            if k == "amid_lc":
                am.phase = 1
            elif k == "amid_lr":
                am.phase = 2
            reps[k].append(rate(fn, data))
    med = {k: float(np.median(v)) for k, v in reps.items()}

    # evaluation: users x 1,000 candidates, vectorised scoring
    test = {k: v[: args.eval_users] for k, v in splits["test"].items()}
    rng = np.random.default_rng(0)
    cands = np.concatenate([test["item_id"][:, None],
                            rng.integers(1, schema["item_id"].vocab_size, (len(test["item_id"]), 999))], 1)
    ev = {}
    for k, m in (("backbone", bb), ("amid", am)):
        amid.score_candidate_matrix(m, {k: v[:256] for k, v in test.items()}, cands[:256], batch_size=256)  # trace
        t = time.perf_counter()
        s = amid.score_candidate_matrix(m, test, cands, batch_size=256)
        ev[k] = len(cands) / (time.perf_counter() - t)
        assert s.shape == cands.shape
    n_obs, n_d = len(splits["train"]["user_id"]), len(both["user_id"])
    epoch_bb = n_obs / med["backbone"]
    epoch_am = n_obs / med["amid_lc"] + n_d / med["amid_lr"]
    result = {
        "benchmark": "amid_throughput", "backbone": args.backbone, "config": args.config,
        "batch_size": bs, "steps": args.steps, "repeats": args.repeats,
        "n_sampled_users": am.n_sampled_users,
        "backbone_rows_per_s": round(med["backbone"], 1),
        "amid_lc_rows_per_s": round(med["amid_lc"], 1),
        "amid_lr_rows_per_s": round(med["amid_lr"], 1),
        "ratio_lc": round(med["amid_lc"] / med["backbone"], 3),
        "ratio_epoch": round(epoch_bb / epoch_am, 3),
        "eval_candidates": 1000,
        "eval_users_per_s_backbone": round(ev["backbone"], 1),
        "eval_users_per_s_amid": round(ev["amid"], 1),
        "load_average": os.getloadavg()[0], "cpus": os.cpu_count(),
        "peak_rss_mb": peak_rss_mb(), "cpu_threads": [threads.inter, threads.intra],
    }
    print(f"{args.backbone}: backbone {med['backbone']:.0f} rows/s, AMID L_c {med['amid_lc']:.0f}, "
          f"L_r {med['amid_lr']:.0f} (ratio {result['ratio_lc']})")
    emit_json(result)


def as_trained(args, splits, schema, threads):
    """Seconds per optimizer step of the evidence table's rows, as ``fit_amid`` trains
    them (input pipeline included), the second fit of each row timed."""
    import keras

    from tfdebias import models
    from tfdebias.methods.amid import fit_amid, reproduce as R
    from tfdebias.methods.amid.data import samplers_pools

    disp = R.DISPLAY[args.backbone]
    want = [disp, f"{disp} + MIM", f"{disp} + AMID"]
    rows = {name: (model, margs) for name, model, margs, _ in
            R.experiment_rows([args.backbone], quick=True,
                              position_negatives=R.DEFAULTS["position_negatives"])
            if name in want}
    pools = samplers_pools(splits)
    per_step = {}
    for name in want:
        model_name, margs = rows[name]
        if args.n_sampled_users is not None and margs.get("mim"):
            margs = dict(margs, n_sampled_users=args.n_sampled_users)
        keras.utils.set_random_seed(0)
        m = models.build(model_name, schema, **margs)
        for reuse in (False, True):  # the first fit traces the steps; the second is timed
            fit = fit_amid(m, splits["train"], schema, unobserved_columns=splits["unobserved"],
                           steps=args.steps, batch_size=args.batch_size,
                           learning_rate=R.DEFAULTS["learning_rate"],
                           dr_lr_ratio=R.DEFAULTS["dr_lr_ratio"], pools=pools,
                           reuse_optimizer=reuse)
        per_step[name] = fit["train_seconds"] / fit["steps"]
        print(f"{name}: {1000 * per_step[name]:.1f} ms per step", flush=True)
    result = {
        "benchmark": "amid_throughput", "mode": "as_trained", "backbone": args.backbone,
        "config": args.config, "batch_size": args.batch_size, "steps": args.steps,
        "position_negatives": R.DEFAULTS["position_negatives"],
        "table_seconds_per_step": {k: round(v, 4) for k, v in per_step.items()},
        "table_ratio": {k: round(per_step[disp] / v, 3) for k, v in per_step.items()},
        "load_average": os.getloadavg()[0], "cpus": os.cpu_count(),
        "peak_rss_mb": peak_rss_mb(), "cpu_threads": [threads.inter, threads.intra],
    }
    emit_json(result)


if __name__ == "__main__":
    main()
