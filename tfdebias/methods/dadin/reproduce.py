"""``tfdebias reproduce dadin``: the evidence table of the paper's Tables 3 (baselines)
and 4 (DADIN1-9, DADIN++) (:func:`run_reproduce`), its CLI arguments, the search space of
``tfdebias tune dadin`` (:data:`SEARCH_SPACE`) and the reproducer's registration."""

from __future__ import annotations

from tfdebias.commands import positive_float, positive_int
from tfdebias.errors import UsageError
from tfdebias.methods.dadin.data import group_rows, load_splits, model_sample, target_domain_rows
from tfdebias.methods.dadin.losses import DOMAIN_MEDIAN
from tfdebias.methods.dadin.model import CONDITIONS, GRL_SCHEDULES, VARIANTS, grl_schedule
from tfdebias.methods.dadin.protocol import domain_diagnostics, evidence_scores
from tfdebias.methods.dadin.train import BUDGETS, row_config, train_row

#: Search space for ``tfdebias tune dadin`` (the reproducer below carries it to tfdebias.tuning).
SEARCH_SPACE = {
    "learning_rate": {"min": 1e-4, "max": 1e-2, "log": True, "step": 10, "default": 1e-4},
    "batch_size": [2000, 512, 1000, 4000],
    "embedding_dim": [64, 16, 32, 128],
    "hidden_units": [[512, 128, 64], [128, 64], [256, 128, 64], [128]],
    "lambda_y": {"fixed": 1.0},
    "lambda_global": [1.0, 0.5, 0.1],
    "lambda_intra": [1.0, 0.5, 0.1],
    "alpha": [0.5, 0.3, 0.7],
    "threshold": ["domain_median", 0.2, 0.05, 0.1, 0.3, 0.5],
    "grl_scale": [1.0, 0.03, 0.1, 0.3],
    "condition": ["detached", "paper", "authors"],
}


# -- tfdebias reproduce dadin -------------------------------------------------------------
#
# The table is an evidence table (tfdebias.evaluation.evidence): every row is trained for the same fixed number of optimizer steps on each
# of several simulator draws (data seeds) and scored on the target-domain test split,
# with 95% intervals from a paired two-level bootstrap over data seeds and test users.
#
# Roles. The bias DADIN addresses is the shift from a label-rich source domain to a
# label-poor target domain with cold-start users. The *floor* is the backbone without its
# debiasing part trained naively on the biased (pooled two-domain) log: DADIN9, the
# paper's own ablation without the two domain losses (no GRL, no classifiers), which is
# also the main baseline of DADIN++ (Table 4). The *skyline* is the same DADIN9, same
# features and budget, trained on ``train_unbiased``: as many rows as ``train``, all drawn
# from the target domain's test population (every target user, cold-start users
# included; see the simulator's docstring), i.e. the target labels the biased log lacks.

#: The adversarial settings of every DADIN row: the authors' loss weights
#: lambda_2 = lambda_3 = 0.5 and gradient clipping at norm 10 (their code), the GRL ramped
#: over the whole run to a maximum of 0.1, T at each domain's batch median, y_hat detached
#: in the intra-class conditioning (the model's docstring says why); ``--grl-*``,
#: ``--threshold`` and ``--condition`` change them. GRL maximum 0.1, not Eq. (11)'s 1:
#: at 1 the plain DANN row diverges on ``covariate_shift`` (its domain loss grows to
#: ~1e15 and its test AUC falls to 0.50; ``docs/results/dadin/covariate_shift_grl1_quick``).
ADVERSARY = {"lambda_global": 0.5, "lambda_intra": 0.5, "clip_norm": 10.0, "grl_scale": 0.1}
#: The loss ablations of Sec. 4.4 as a zero weight on identical layers: built under one
#: seed they start from the same weights as DADIN++ and draw the same dropout masks.
ZERO_WEIGHT = {"dadin7": {"lambda_global": 0.0}, "dadin8": {"lambda_intra": 0.0},
               "dadin9": {"lambda_global": 0.0, "lambda_intra": 0.0}}


def _dadin_args(variant: str) -> dict:
    return {**ADVERSARY, **(ZERO_WEIGHT.get(variant) or VARIANTS[variant])}


#: Table 3 / Table 4 rows: (row name, model, model args, group). Single-domain models are
#: trained on the target-domain rows only (the paper: "the loss is calculated with the
#: true labels in its domain"), the cross-domain ones on the rows of both domains. Two
#: rows are not in the paper: ``DANN`` (DADIN's backbone with one global domain
#: classifier on the representation the predictor reads, ``h = h_spec``, GRL weight 1:
#: Ganin et al.'s DANN) and ``DADIN9 target-only`` (the floor's model trained on the
#: target-domain rows alone, group ``target``).
TABLE_ROWS = (
    [("LR", "lr", {}, "single"), ("FM", "fm", {}, "single"),
     ("Wide&Deep", "wide_deep", {}, "single"), ("xDeepFM", "xdeepfm", {}, "single"),
     ("DIN", "din", {}, "single"), ("NFM", "nfm", {}, "single"),
     ("MV-DNN", "mv_dnn", {}, "cross"), ("MLP++", "mlp_plus_plus", {}, "cross"),
     ("CSN", "csn", {}, "cross"), ("CoNet", "conet", {}, "cross"), ("MiNet", "minet", {}, "cross")]
    + [(f"DADIN{i}", "dadin", _dadin_args(f"dadin{i}"), "ablation") for i in range(1, 10)]
    + [("DADIN9 target-only", "dadin", _dadin_args("dadin9"), "target"),
       ("DANN", "dadin", {**ADVERSARY, "domain_agnostic": False, "intra_class_loss": False,
                          "lambda_global": 1.0}, "dadin"),
       ("DADIN++", "dadin", _dadin_args("dadin++"), "dadin")]
)

#: the rows ``--quick`` trains (plus the skyline and the model-free rows)
QUICK_ROWS = ("DIN", "DADIN9 target-only", "DADIN9", "DANN", "DADIN++")
#: the floor (the backbone trained naively on the biased log) and main baseline
FLOOR = "DADIN9"
#: the method row
METHOD = "DADIN++"
#: the skyline row: FLOOR's model and budget trained on ``train_unbiased``
SKYLINE = "DADIN9 on train_unbiased"
#: the logistic-regression row fits on at most this many random rows of ``train``
LOGISTIC_ROWS = 100_000
#: the model-free rows
POPULARITY, LOGISTIC, TRUTH = "popularity", "logistic regression", "truth (relevance)"


def _record(name: str, role: str, data_seed, seed: int, scores: dict, **extra) -> dict:
    metrics = {k: s.point() for k, s in scores.items()}
    metrics.update(extra.pop("metrics", {}))
    return {"name": name, "role": role, "data_seed": data_seed, "seed": seed, **extra,
            "metrics": metrics, "scores": scores}


def _role(name: str) -> str:
    return {FLOOR: "floor", METHOD: "method", SKYLINE: "skyline"}.get(name, "baseline")


def _simple_rows(splits: dict, schema, data_seed) -> list[dict]:
    """The model-free rows of one data seed: popularity (each item's click rate in
    ``train``, shrunk toward the global rate: :func:`~tfdebias.evaluation.baselines.item_ctr`),
    logistic regression on DADIN's own inputs (the ``user_*`` and ``item_*`` fields and
    both histories as bags of items) fitted on ``train``
    (:func:`~tfdebias.evaluation.baselines.logistic_regression`; on a random subsample of
    :data:`LOGISTIC_ROWS` rows where ``train`` is larger), and the truth row (the
    simulator's true click probability) where the data ships it."""
    from tfdebias.evaluation import baselines

    test, train = splits["test"], splits["train"]
    label = schema.label.name
    n_items = schema["item_id"].vocab_size
    pop = baselines.item_ctr(train["item_id"], train[label], n_items)[test["item_id"]]
    out = [_record(POPULARITY, "simple", data_seed, 0, evidence_scores(test, pop, label))]
    fields = [f.name for f in schema.categorical
              if f.name.startswith(("user_", "item_")) or f.name in ("user", "item")]
    fields += [f.name for f in schema.sequences]
    n = len(train[label])
    if n > LOGISTIC_ROWS:  # a random subsample bounds the fit's time on large logs
        import numpy as np

        keep = np.sort(np.random.default_rng([0 if data_seed is None else data_seed, 11])
                       .choice(n, LOGISTIC_ROWS, replace=False))
        train = {k: v[keep] for k, v in train.items()}
    lr = baselines.logistic_regression(train, schema, label=label, fields=fields)
    out.append(_record(LOGISTIC, "simple", data_seed, 0,
                       evidence_scores(test, lr.predict(test), label)))
    if "relevance" in test:
        out.append(_record(TRUTH, "truth", data_seed, 0,
                           evidence_scores(test, test["relevance"], label)))
    return out


def run_reproduce(args) -> str:
    """``tfdebias reproduce dadin``: an evidence table of Table 3 (baselines) and Table 4
    (DADIN1-9, DADIN++) over data seeds x model seeds (see the comment above
    :data:`TABLE_ROWS`)."""
    import json
    import math
    import time
    from pathlib import Path

    from tfdebias import data as tdata
    from tfdebias.evaluation.evidence import write_evidence
    from tfdebias.progress import Progress
    from tfdebias.models import predict

    if getattr(args, "stopping", "fixed") != "fixed":
        raise UsageError(
            "reproduce dadin: --stopping snips needs propensities, and a cross-domain log has "
            "none (the bias is a domain shift, not an exposure policy); use --stopping fixed")
    budget_name = "quick" if args.quick else "paper"
    budget = BUDGETS[budget_name]
    if args.seeds is None:
        args.seeds = 1 if args.quick else 2
    data_seeds = getattr(args, "data_seeds", None) or (3 if args.quick else 5)
    wanted = [r.strip() for r in (args.rows or "").split(",") if r.strip()]
    names = [r[0] for r in TABLE_ROWS]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise UsageError(f"--rows: unknown rows {unknown}; the table has {names}")
    if not wanted and args.quick:
        wanted = list(QUICK_ROWS)
    if wanted and FLOOR not in wanted:
        wanted.append(FLOOR)  # the floor is always trained
    rows = [r for r in TABLE_ROWS if not wanted or r[0] in wanted]
    rows += [(SKYLINE, "dadin", _dadin_args("dadin9"), "skyline")]
    adversary = _adversary_overrides(args)
    rows = [(n, m, {**a, **adversary} if m == "dadin" else a, g) for n, m, a, g in rows]
    overrides = {"embedding_dim": args.embedding_dim}
    data = tdata.evidence_data(args.data)

    records, t0 = [], time.time()
    seeds_of_data = tdata.data_seeds(data, data_seeds)
    progress = Progress(len(seeds_of_data) * (len(rows) * args.seeds + 1))
    steps = batch = None
    for d in seeds_of_data:
        schema, splits = load_splits(data, data_dir=args.data_dir, manual_dir=args.manual_dir,
                                     data_seed=d)
        train = splits["train"]
        target_rows = target_domain_rows(train, schema)
        n_train = len(train[schema.label.name])
        if steps is None:  # fixed on the first draw, the same for every row and draw
            batch = budget["cross"]["batch_size"]
            steps = (args.steps if args.steps is not None
                     else math.ceil(args.epochs * n_train / batch) if args.epochs is not None
                     else budget["steps"])
        sample = model_sample(train, schema)
        for name, model, margs, group in rows:
            train_cfg, model_args = row_config(model, margs, group, budget, overrides)
            rows_of = group_rows(group, splits, target_rows)
            for seed in range(args.seeds):
                t = time.time()
                obj = train_row(model, model_args, rows_of, schema, train_cfg, steps, seed,
                                sample=sample)
                seconds = time.time() - t
                p = predict(obj, splits["test"])
                extra = {"train/steps": float(steps), "train_seconds": round(seconds, 2)}
                if model == "dadin":
                    extra.update(domain_diagnostics(obj, train, schema, seed=d or 0))
                records.append(_record(
                    name, "skyline" if group == "skyline" else _role(name), d, seed,
                    evidence_scores(splits["test"], p, schema.label.name),
                    group=group, params=int(obj.count_params()), metrics=extra))
                progress.step(f"{name} data seed {d} seed {seed}: test/auc "
                              f"{records[-1]['metrics']['test/auc']:.4f} ({seconds:.0f}s)")
        records += _simple_rows(splits, schema, d)
        progress.step(f"{POPULARITY}, {LOGISTIC}, {TRUTH} data seed {d}")

    schedule = adversary.get("grl_schedule", "run")
    grl_end = {"run": float(grl_schedule(steps, steps)), "constant": 1.0,
               "warmup": float(grl_schedule(steps, 15000))}[schedule] * {**ADVERSARY, **adversary}["grl_scale"]
    notes = (
        f"Data: `{data}`, {data_seeds} data seed(s) (each regenerates the simulator) x "
        f"{args.seeds} model seed(s). Budget `{budget_name}` "
        f"({json_budget(budget, {**overrides, 'steps': steps})}). Single-domain rows (DIN, ...) train on the "
        "target-domain rows of `train`, cross-domain rows and DADIN on both domains; `DADIN9 target-only` is the "
        "floor's model on the target-domain rows alone. "
        f"Floor = {FLOOR} (no domain losses) on the pooled biased log, also the main "
        f"baseline; skyline = {FLOOR} on `train_unbiased` (as many rows as `train`, drawn "
        "from the target domain's test population, cold-start users included). DADIN "
        f"rows: {json.dumps({**ADVERSARY, **adversary}, sort_keys=True)}, T at each domain's "
        "batch median unless set; DADIN7-9 are DADIN++'s layers with the named loss "
        "weights at 0 (same initial weights and dropout masks as DADIN++ under one seed); "
        "DANN = one global domain classifier on the predictor's input (no domain-agnostic "
        "layer, no intra-class classifiers, weight 1). `probe/h_da`, `probe/h`: held-out "
        "AUC of a linear probe for the domain on the representations of 4,000 source and "
        "4,000 target rows of `train` (0.5 = no domain information); `loss/domain`: the "
        "global domain classifier's cross-entropy there (ln 2 = 0.693 when it is "
        "confused). Metrics on the target-domain test split (for `covariate_shift`: "
        "target items never seen in train); `/cold` = users with no target row in "
        "train, `/warm` = the others; units of the bootstrap = test users. The test split "
        f"holds target rows only, so there is no source-domain group. The GRL weight "
        f"({schedule} schedule) is {grl_end:.3f} at the last step. "
        f"Popularity and logistic regression: `tfdebias.evaluation.baselines`. "
        f"Wall time {time.time() - t0:.0f} s. See docs/methods/dadin.md.")
    stopping = (f"fixed budget: {steps} optimizer steps per row (batch "
                f"{budget['single']['batch_size']} single-domain, {batch} cross-domain), no "
                "early stopping")
    out = write_evidence(
        Path(args.out), records, title=f"DADIN on {data} (the paper's Tables 3-4): evidence",
        metric="test/auc", main_baseline=FLOOR, method=METHOD, stopping=stopping,
        metrics=["test/auc", "test/auc/cold", "test/auc/warm", "test/logloss", "probe/h_da",
                 "probe/h", "loss/domain"], notes=notes,
        extra={"budget": budget_name, "budget_settings": budget, "overrides": overrides,
               "data": data, "data_seeds": data_seeds, "steps": steps})
    return str(out)


def json_budget(budget: dict, overrides: dict) -> str:
    import json

    shown = {**budget, **{k: v for k, v in overrides.items() if v is not None}}
    return json.dumps(shown, sort_keys=True)


def _reproduce_arguments(parser):
    parser.add_argument("--rows", default=None,
                        help="comma-separated subset of table rows (e.g. 'DIN,DADIN9,DADIN++'); "
                             f"{FLOOR} (the floor) and the skyline always run")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=positive_int, default=None,
                        help="optimizer steps per row (default: the budget's, 600 with --quick)")
    budget.add_argument("--epochs", type=positive_int, default=None,
                        help="set the steps to this many epochs of the first draw's `train` "
                             "split (the same steps for every row)")
    parser.add_argument("--embedding-dim", type=positive_int, default=None,
                        help="override the budget's embedding size")
    parser.add_argument("--grl-schedule", choices=GRL_SCHEDULES, default=None,
                        help="DADIN rows: the GRL weight ramped over the run (default), over "
                             "the authors' 15,000 steps (warmup), or constant (Eq. (11))")
    parser.add_argument("--grl-scale", type=positive_float, default=None,
                        help="DADIN rows: the GRL weight's maximum (default 0.1)")
    parser.add_argument("--threshold", type=_threshold, default=None,
                        help="DADIN rows: T of Eq. (17)-(18), 'domain_median' (default) or "
                             "a fixed value in (0, 1) (the paper's)")
    parser.add_argument("--condition", choices=CONDITIONS, default=None,
                        help="DADIN rows: y_hat in the intra-class classifiers' input: "
                             "detached (default), paper (Eq. (13)-(14)) or authors "
                             "(Rev(h_DA) * y_hat)")


def _threshold(text: str):
    import argparse

    if text == DOMAIN_MEDIAN:
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected {DOMAIN_MEDIAN!r} or a number in (0, 1), got {text!r}")
    return value


def _adversary_overrides(args) -> dict:
    """The DADIN rows' settings the CLI changes (``--grl-schedule`` ...)."""
    out = {}
    for key in ("grl_schedule", "grl_scale", "threshold", "condition"):
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    return out


def _register_reproducer():
    from tfdebias.methods import Reproducer, register_reproducer

    register_reproducer(Reproducer(
        name="dadin",
        help="DADIN: evidence table of the baselines, DADIN1-9 and DADIN++ on a "
             "cross-domain CTR log (headroom, gap closed, CIs over data seeds)",
        run=run_reproduce, add_arguments=_reproduce_arguments, default_data="cross_domain_ctr",
        default_seeds=None, search_space=SEARCH_SPACE))


_register_reproducer()
