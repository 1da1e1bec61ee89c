"""``tfdebias reproduce amid``: the evidence table of AMID (Tables 1-2 in shape): the rows,
their shared step budget, the simple baselines, the notes and the tuner's search space."""

from __future__ import annotations

import math
import time
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfdebias.commands import positive_int
from tfdebias.errors import UsageError
from tfdebias.methods import Reproducer, register_reproducer
from tfdebias.progress import Progress
from tfdebias.methods.amid.data import samplers_pools
from tfdebias.methods.amid.model import BACKBONES, N_SAMPLED_USERS, POOLINGS, build_amid
from tfdebias.methods.amid.protocol import (GROUPS, clear_candidates, ranking_candidates,
                                            ranking_evidence, score_candidate_matrix)
from tfdebias.methods.amid.train import BUDGET_COUNTS, fit_amid, step_budget

DISPLAY = {"gru4rec": "GRU4Rec", "sasrec": "SASRec", "bert4rec": "BERT4Rec"}
_PLAIN = {"backbone": "{b}", "mim": False, "transfer": False, "estimator": "none"}
#: (row name, model name, model args, role) for one backbone; {B} is the backbone's name.
#: Every row is the ``amid`` model in one configuration, so every row is trained by the
#: same loop and loss (next-item BCE at every position); the plain backbone
#: (``mim=False, transfer=False``) trained on the selected log is the evidence table's
#: floor, the same trained on `train_unbiased` its skyline. The truth rows are positive
#: controls: the backbone given the hidden shared interest (the cross-domain headroom's
#: ceiling; only where the data ship it) and AMID with the true propensity.
ROW_TEMPLATES = (
    ("{B}", "amid", _PLAIN, "floor"),
    ("{B} on train_unbiased", "amid", _PLAIN, "skyline"),
    ("{B} + true interest", "amid", dict(_PLAIN, interest_features="@interest"), "truth"),
    ("{B} + IPSCDR", "amid", {"backbone": "{b}", "mim": False, "estimator": "ips"}, "baseline"),
    ("{B} + MIM", "amid", {"backbone": "{b}", "mim": True, "estimator": "none"}, "baseline"),
    ("{B} + AMID", "amid", {"backbone": "{b}", "mim": True, "estimator": "dr"}, "method"),
    ("{B} + AMID (true propensity)", "amid",
     {"backbone": "{b}", "mim": True, "estimator": "dr", "propensity": "true"}, "truth"),
)
#: how a backbone's +MIM/+AMID rows form MIM's interest groups: ``threshold`` ``k`` of
#: Eq. (4), or ``group_size`` ``n``, each row's ``n`` most similar of the N sampled users
#: (a per-row ``k``; decision 17 of ``docs/methods/amid.md``). ``--threshold`` or
#: ``--group-size`` overrides it for every backbone. SASRec and GRU4Rec keep the paper's
#: fixed k at 0.3 (group rates 0.1-0.9 on ``open_world``). For BERT4Rec no fixed k kept
#: both rows' groups open on every draw: among the k where data seed 0 kept them open
#: (``python docs/results/amid/mim_threshold.py bert4rec 0.3 0.5 0.7 0.8 0.9 0.95``), the
#: best validation NDCG@10 (0.95) made +AMID group everyone on data seed 2, and the
#: safest (0.7) made it group no one there (a collapsed group fails a run). So BERT4Rec
#: groups by size; ``n`` is chosen by validation NDCG@10 on data seed 0
#: (``python docs/results/amid/mim_threshold.py bert4rec --group-size 8 16 32 48``).
MIM_GROUPING = {"sasrec": {"threshold": 0.3}, "gru4rec": {"threshold": 0.3},
                "bert4rec": {"group_size": 32}}
#: the cross-domain baselines (one row each, whatever the backbone; not with --quick)
CDSR_ROWS = (("STAR", "star", {}, "baseline"), ("Pi-Net", "pinet", {}, "baseline"),
             ("C2DSR", "c2dsr", {}, "baseline"))
#: the simple baselines every evidence table carries (tfdebias.evaluation.baselines):
#: popularity and an item-kNN that reads what the backbone reads (the history of the
#: target's own domain); a backbone below either is flagged
SIMPLE_ROWS = ("popularity", "item-kNN (own domain)")
#: the item-kNN that reads both domains' histories: a cross-domain reference (role
#: "baseline"), not a check of the single-domain backbone: it uses the other-domain
#: history that the cross-domain rows (MIM, AMID) are there to bring in
CROSS_DOMAIN_KNN = "item-kNN (both domains)"
#: the row trained on this split instead of `train`
TRAIN_SPLIT = {"skyline": "train_unbiased"}

#: the headline metric: NDCG@10 of domain A's test users (the paper's Cloth), one value
#: per test user, each user a bootstrap unit
HEADLINE = "test/A/ndcg@10"

#: the hyper-parameters every row shares (the code's bs 256, Adam; lr raised for the
#: simulator's small size; d = 32 instead of 128). ``epochs`` are passes of Algorithm 1
#: (each ``L_c`` over `train` + ``L_r`` over `train` + `unobserved`): 50 as the code.
DEFAULTS = {"epochs": 50, "batch_size": 256, "learning_rate": 3e-3, "dr_lr_ratio": 0.1,
            "position_negatives": 32}
#: ``position_negatives`` (the AMID model's argument, every row of the table): the
#: next-item term of ``L_c`` is a sampled softmax over the next item and 32 negatives of
#: its domain instead of the authors' BCE against one negative. With the BCE SASRec stayed
#: at the item-kNN's level; with 32 negatives it clears it (data seed 0 of ``open_world``,
#: the quick budget: BCE 0.088, 32 negatives 0.096, 128 negatives 0.096, item-kNN 0.083;
#: ``python docs/results/amid/position_negatives.py``), the many-negatives finding of
#: gSASRec (Petrov & Macdonald, RecSys 2023). ``--position-negatives 0`` gives the BCE.
QUICK = {"epochs": 10}
#: validation rows (observed users') and negatives the checkpoint choice reads
VALID_ROWS, VALID_NEGATIVES = 2000, 99
#: a MIM row's interest groups on these many test rows give its (evaluation) group rate
RATE_ROWS = 1024


def experiment_rows(backbones: Sequence[str], *, quick: bool = False, interest=(),
                    position_negatives: int = 0, pooling: str = "mean"):
    """``[(name, model, args, role)]``: per backbone the floor, the skyline, the truth rows
    and the three AMID rows (the MIM rows grouped by the backbone's :data:`MIM_GROUPING`); the
    cross-domain baselines and the true-propensity AMID row unless ``quick``. With several
    backbones only the first gives the floor, the skyline and the truth rows (the others'
    floors are baselines). ``interest``: the data's hidden-interest columns (no
    true-interest row without them); ``position_negatives``: given to every AMID-model
    row (the sampled-softmax next-item loss; 0 = the BCE);
    ``pooling``: given to the rows with a cross-domain input (+IPSCDR, +MIM, +AMID) unless
    it is Eq. (7)'s ``"mean"``."""
    rows = [] if quick else list(CDSR_ROWS)
    for i, b in enumerate(backbones):
        for name, model, args, role in ROW_TEMPLATES:
            if i and role in ("skyline", "truth"):
                continue  # one skyline and one set of positive controls per table
            if quick and args.get("propensity") == "true":
                continue  # the true-propensity control: full tables only (quick <= 10 min)
            if i and role == "floor":
                role = "baseline"
            if args.get("interest_features") == "@interest":
                if not interest:
                    continue
                args = dict(args, interest_features=list(interest))
            args = {k: (v.format(b=b) if isinstance(v, str) else v) for k, v in args.items()}
            if args.get("mim"):
                args.update(MIM_GROUPING[b])
            if position_negatives:
                args["position_negatives"] = int(position_negatives)
            if pooling != "mean" and (args.get("mim") or args.get("transfer", True)):
                args["pooling"] = pooling
            rows.append((name.format(B=DISPLAY[b]), model.format(b=b), args, role))
    order = {"floor": 0, "skyline": 1}
    return sorted(rows, key=lambda r: order.get(r[3], 2))  # stable: floor, skyline, the rest


def scored_candidates(splits, schema, n_neg: int) -> np.ndarray:
    """The candidates every row of a data seed is scored on: per test row its positive
    (column 0) and ``n_neg`` items of its domain it never interacted with (seeded: the
    same for every row)."""
    n_users = schema["user_id"].vocab_size if "user_id" in schema else None
    return ranking_candidates(splits, ["history_a", "history_b"], "test", n_neg=n_neg, seed=0,
                              n_users=n_users)


def evidence_draw(data_seed: int, n_neg: int = 999, data: str = "cross_domain_sequences"):
    """``(splits, schema, candidates)``: one data seed of ``data``'s evidence scenario and
    its :func:`scored_candidates`, as a table's rows see them (the analysis scripts under
    ``docs/results/amid/`` start from it)."""
    from tfdebias import data as tdata

    clear_candidates()  # keyed by array id: never reuse across draws
    splits, schema = tdata.load(tdata.evidence_data(data), data_seed=data_seed)
    return splits, schema, scored_candidates(splits, schema, n_neg)


def simple_scores(name: str, splits, schema, candidates) -> np.ndarray:
    """Candidate scores of a simple baseline fitted on `train` (the biased log):
    ``popularity`` (how often the item occurs in train's histories and targets),
    ``item-kNN (own domain)`` (cosine item-item neighbours of the train users' items,
    scored against the history of the test row's own domain: the input the single-domain
    backbone reads) or ``item-kNN (both domains)`` (the same neighbours scored against
    both domains' histories)."""
    from tfdebias.evaluation import baselines

    train, test = splits["train"], splits["test"]
    n_items = int(schema["item_id"].vocab_size)
    hist = np.concatenate([np.asarray(train[h], np.int64) for h in ("history_a", "history_b")], 1)
    users = np.repeat(np.asarray(train["user_id"], np.int64), hist.shape[1] + 1)
    items = np.concatenate([hist, np.asarray(train["item_id"], np.int64)[:, None]], 1).reshape(-1)
    keep = items > 0
    if name == "popularity":
        pop = baselines.popularity(items[keep], n_items)
        return pop[candidates]
    if name in ("item-kNN (own domain)", CROSS_DOMAIN_KNN):
        knn = baselines.ItemKNN(users[keep], items[keep], n_items)
        ha, hb = (np.asarray(test[h], np.int64) for h in ("history_a", "history_b"))
        if name == CROSS_DOMAIN_KNN:
            th = np.concatenate([ha, hb], 1)
        else:  # the target's own domain (0 = A, 1 = B); histories share one width
            th = np.where(np.asarray(test["domain"]).reshape(-1, 1) == 0, ha, hb)
        out = np.empty(candidates.shape, np.float64)
        for a in range(0, len(th), 2048):  # blocks bound the dense [rows, n_items] scores
            s = knn.score(th[a:a + 2048])
            out[a:a + 2048] = np.take_along_axis(s, candidates[a:a + 2048], axis=1)
        return out
    raise UsageError(f"unknown simple baseline {name!r}; expected one of "
                     f"{(*SIMPLE_ROWS, CROSS_DOMAIN_KNN)}")


def run_row(model_name, model_args, splits, schema, *, seed, steps, batch_size, learning_rate,
            dr_lr_ratio, candidates, train_split="train", pools=None, epochs=None,
            models_cache: dict | None = None, valid=None, where: str = "", check_rate: bool = True,
            count: str = "all"):
    """Train one row for exactly ``steps`` optimizer steps on ``splits[train_split]`` and
    score the test rows' ``candidates``. Returns ``(metrics, scores)`` as
    :func:`ranking_evidence`, plus ``steps``, ``train_seconds``, with ``valid`` the
    step of the checkpoint kept (``best_step``), for a MIM row its group rate on the test
    rows (``group_rate``; a rate of 0 or 1 fails the run,
    :func:`~tfdebias.methods.amid.train.check_group_rates`, unless ``check_rate`` is false:
    a threshold search reads collapsed rates instead of stopping on them) and for a row
    with a learned propensity its AUC and ECE (:func:`propensity_quality`). ``count="lc"``:
    ``steps`` counts the ``L_c`` updates only (:func:`~tfdebias.methods.amid.train.fit_amid`).

    ``models_cache`` (a dict the caller keeps): a row already trained in this process
    with the same model, arguments, seed and schema is not built again; its model gets its
    initial weights and a fresh optimizer back (``fit_amid(reuse_optimizer=True)``), so
    its train and score steps are traced once per run, not once per data seed (tracing
    costs about as much CPU as 100 training steps)."""
    from tfdebias import models
    from tfdebias.methods.amid.model import AMID
    from tfdebias.methods.amid.train import check_group_rates

    keras.utils.set_random_seed(seed)
    key = (model_name, repr(sorted(model_args.items())), seed, _schema_key(schema))
    cached = models_cache.get(key) if models_cache is not None else None
    if cached is None:
        model = models.build(model_name, schema, **model_args)
        build_amid(model, {k: tf.constant(v[:2]) for k, v in splits[train_split].items()})
        if models_cache is not None:
            models_cache[key] = (model, model.get_weights())
    else:  # the same model, its initial weights back: its train step is traced already
        model, weights = cached
        model.set_weights(weights)
    fit = fit_amid(model, splits[train_split], schema, unobserved_columns=splits.get("unobserved"),
                   steps=steps, epochs=epochs or 1, batch_size=batch_size,
                   learning_rate=learning_rate, dr_lr_ratio=dr_lr_ratio, seed=seed, pools=pools,
                   reuse_optimizer=cached is not None, valid=valid, count=count)
    metrics, scores = ranking_evidence(
        score_candidate_matrix(model, splits["test"], candidates), splits["test"])
    metrics.update(steps=float(fit["steps"]), steps_c=float(fit["steps_c"]),
                   steps_r=float(fit["steps_r"]), train_seconds=fit["train_seconds"])
    if "best_step" in fit:
        metrics["best_step"] = float(fit["best_step"])
        metrics["valid/ndcg@10"] = float(max(fit["valid_ndcg"]))
    if isinstance(model, AMID) and model.mim:
        rate = group_rate(model, splits["test"])
        metrics["group_rate"] = rate
        if check_rate:
            check_group_rates([rate], where=where)
    if isinstance(model, AMID) and model.estimator in ("dr", "ips") and \
            model.propensity_source == "learned" and "unobserved" in splits:
        metrics.update(propensity_quality(model, splits))
    return metrics, scores


def group_rate(model, columns, n_rows: int = RATE_ROWS) -> float:
    """Share of (test row, sampled user) pairs in one interest group (Eq. 4) with the
    evaluation bank, over the first ``n_rows`` test rows (the groups a score reads)."""
    feats = {k: tf.constant(np.asarray(columns[k])[:n_rows])
             for k in list(model.histories) + [model.domain_feature, model.backbone.item_feature]}
    return float(model.prefix_representations(feats, training=False)[2])


def propensity_quality(model, splits, *, batch_size: int = 1024) -> dict:
    """How well the learned user-level propensity ``g_psi`` knows who is observed, on the
    non-overlapping rows of `train` + `unobserved` (overlapping users are always
    observed): ``propensity/auc`` (its AUC for the observation ``o``),
    ``propensity/auc_true`` (the true propensity's AUC for the same ``o``: the ceiling),
    ``propensity/ece`` (mean |mean p_hat - mean true p| over 10 equal-count bins of
    p_hat, weighted by bin size) and ``propensity/clipped`` (share of rows clipped)."""
    from tfdebias.evaluation.metrics import auc

    cols = {k: np.concatenate([np.asarray(splits["train"][k]), np.asarray(splits["unobserved"][k])])
            for k in ("history_a", "history_b", "domain", "item_id", "observed", "propensity", "overlap")}
    keep = cols["overlap"] < 0.5
    cols = {k: v[keep] for k, v in cols.items()}
    names = list(model.histories) + [model.domain_feature, model.backbone.item_feature]
    fn = tf.function(lambda f: tf.sigmoid(model.propensity_logit(model.user_representation(f))))
    p_hat = np.concatenate([fn({k: tf.constant(cols[k][i:i + batch_size]) for k in names}).numpy()
                            for i in range(0, len(keep[keep]), batch_size)])
    o, p_true = cols["observed"], cols["propensity"]
    bins = np.array_split(np.argsort(p_hat), 10)
    ece = sum(len(b_) * abs(p_hat[b_].mean() - p_true[b_].mean()) for b_ in bins if len(b_)) / len(p_hat)
    return {"propensity/auc": float(auc(o, p_hat)), "propensity/auc_true": float(auc(o, p_true)),
            "propensity/ece": float(ece),
            "propensity/clipped": float(np.mean(p_hat < model.propensity_clip))}


def validation_set(splits, users_split: str, n_users, *, rows: int = VALID_ROWS,
                   n_neg: int = VALID_NEGATIVES):
    """``(columns, candidates)`` the checkpoint choice reads: the `valid` rows of the users
    in ``users_split`` (what the row trains on: early stopping never reads a user the
    selection did not observe), the first ``rows``, each positive with ``n_neg``
    negatives (seeded)."""
    users = np.unique(np.asarray(splits[users_split]["user_id"]))
    valid = splits["valid"]
    keep = np.flatnonzero(np.isin(np.asarray(valid["user_id"]), users))[:rows]
    cols = {k: np.asarray(v)[keep] for k, v in valid.items()}
    cand = ranking_candidates(dict(splits, **{f"valid:{users_split}": cols}), ["history_a", "history_b"],
                              f"valid:{users_split}", n_neg=n_neg, seed=1, n_users=n_users)
    return cols, cand


def _schema_key(schema) -> str:
    return schema.to_json() if hasattr(schema, "to_json") else repr(schema)


def _reproduce_args(p):
    p.add_argument("--backbone", choices=list(BACKBONES) + ["all"], default=None,
                   help="sequential backbone of the floor, skyline and +IPSCDR/+MIM/+AMID rows "
                        "(default sasrec; all: every backbone's rows, SASRec's floor and skyline)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help=f"budget in passes of Algorithm 1 (default {DEFAULTS['epochs']}; "
                        f"{QUICK['epochs']} with --quick): every row "
                        "gets the optimizer steps an IPS/DR row takes in that many epochs")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="optimizer steps per row (overrides --epochs)")
    p.add_argument("--budget", choices=BUDGET_COUNTS, default="all",
                   help="what the equal budget counts: all (default: every optimizer step, an "
                        "IPS/DR row's L_r steps included, so it gets fewer L_c steps than the "
                        "backbone) or lc (the L_c steps only, an IPS/DR row's L_r passes on top: "
                        "a diagnostic of what the L_r share of the budget costs)")
    p.add_argument("--negatives", type=positive_int, default=999, help="sampled negatives per test row")
    p.add_argument("--position-negatives", type=int, default=None,
                   help=f"negatives of the sampled-softmax next-item loss every row trains with "
                        f"(default {DEFAULTS['position_negatives']}; 0: the paper's BCE against one "
                        f"negative)")
    grouping = p.add_mutually_exclusive_group()
    grouping.add_argument("--threshold", type=float, default=None,
                          help="MIM threshold k of Eq. (4) for every +MIM/+AMID row (default per "
                               "backbone: " + ", ".join(
                                   f"{DISPLAY[b]} " + (f"k {g['threshold']}" if "threshold" in g
                                                       else f"group size {g['group_size']}")
                                   for b, g in MIM_GROUPING.items()) + ")")
    grouping.add_argument("--group-size", type=positive_int, default=None, metavar="n",
                          help=f"group every +MIM/+AMID row's user with her n most similar of "
                               f"the {N_SAMPLED_USERS} sampled users instead of by a threshold "
                               f"(1 <= n < {N_SAMPLED_USERS})")
    p.add_argument("--pooling", choices=POOLINGS, default="mean",
                   help="how the +IPSCDR/+MIM/+AMID rows pool the user's own and cross-domain "
                        "positions: mean (default, Eq. 7 of the paper) or balanced (half each; "
                        "a deviation, see docs/methods/amid.md)")
    p.add_argument("--rows", default=None,
                   help="comma-separated names of the baseline/method rows to run (default: "
                        "all); the floor, skyline and simple baselines always run")


def _load_draw(name, args, data_seed):
    from tfdebias import data as tdata

    return tdata.load(name, data_dir=args.data_dir, manual_dir=args.manual_dir, data_seed=data_seed)


def run_reproduce(args):
    """``tfdebias reproduce amid``: the evidence table of AMID (Tables 1-2 in shape) on
    one scenario, over data seeds x model seeds (see ``docs/methods/amid.md``)."""
    from pathlib import Path

    from tfdebias import data as tdata
    from tfdebias.evaluation import evidence
    from tfdebias.evaluation.results import write_results

    data = tdata.evidence_data(args.data or "cross_domain_sequences")
    if getattr(args, "stopping", "fixed") != "fixed":
        raise UsageError(
            "amid: --stopping snips does not apply: the rows' labels are all positive "
            "(sampled-negative ranking, no logged negatives), and selection is per user, so "
            "there is no IPS-weighted validation log loss to stop on; use --stopping fixed")
    backbone = args.backbone or "sasrec"
    backbones = list(BACKBONES) if backbone == "all" else [backbone]
    if backbone == "all":
        backbones = ["sasrec"] + [b for b in backbones if b != "sasrec"]
    hp = dict(DEFAULTS, **(QUICK if args.quick else {}))
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
        hp["epochs"] = args.epochs
    if getattr(args, "position_negatives", None) is not None:
        if args.position_negatives < 0:
            raise UsageError(f"--position-negatives must be >= 0, got {args.position_negatives}")
        hp["position_negatives"] = args.position_negatives
    group_size = getattr(args, "group_size", None)
    if group_size is not None:
        if args.threshold is not None:
            raise UsageError("give --threshold or --group-size, not both")
        if not 1 <= group_size < N_SAMPLED_USERS:
            raise UsageError(f"--group-size must be in [1, {N_SAMPLED_USERS}) (the sampled "
                             f"users), got {group_size}")
    steps_arg = getattr(args, "steps", None)
    if steps_arg is not None and steps_arg < 1:
        raise UsageError(f"--steps must be >= 1, got {steps_arg}")
    pooling = getattr(args, "pooling", "mean") or "mean"
    if pooling not in POOLINGS:
        raise UsageError(f"--pooling must be one of {POOLINGS}, got {pooling!r}")
    budget_count = getattr(args, "budget", "all") or "all"
    if budget_count not in BUDGET_COUNTS:
        raise UsageError(f"--budget must be one of {BUDGET_COUNTS}, got {budget_count!r}")
    if args.negatives < 1:
        raise UsageError(f"--negatives must be >= 1, got {args.negatives}")
    wanted = None
    if args.rows:  # checked against every row a table may have, before any data is drawn
        wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
        optional = [n for n, _, _, role in experiment_rows(backbones, quick=args.quick, interest=("?",))
                    if role not in ("floor", "skyline")]
        unknown = sorted(set(wanted) - set(optional))
        if unknown:
            raise UsageError(f"--rows: unknown rows {unknown}; rows are {optional}")
    seeds = list(range(args.seeds or 1))
    n_data = getattr(args, "data_seeds", None) or (3 if args.quick else 5)
    data_seeds = tdata.data_seeds(data, n_data)  # [None]: a real data set, one draw
    simulator = data_seeds != [None]
    # the first draw, loaded before any training, fails fast on a bad data set
    first = _load_draw(data, args, data_seeds[0])
    if simulator and "train_unbiased" not in first[0]:
        raise UsageError(f"{data}: the simulator wrote no train_unbiased split (rebuild it)")
    interest = [f.name for f in first[1].by_role("truth") if f.name.startswith("interest_")]
    rows = experiment_rows(backbones, quick=args.quick, interest=interest,
                           position_negatives=hp["position_negatives"],
                           pooling=pooling)
    grouping = None  # --threshold or --group-size: the grouping of every MIM row
    if args.threshold is not None:
        grouping = {"threshold": args.threshold, "group_size": 0}
    elif group_size is not None:
        grouping = {"group_size": group_size}
    if grouping is not None:
        rows = [(n, m, {**{k: v for k, v in a.items() if k not in ("threshold", "group_size")},
                        **grouping} if a.get("mim") else a, r) for n, m, a, r in rows]
    if wanted is not None:
        rows = [r for r in rows if r[3] in ("floor", "skyline") or r[0] in wanted]
    if not simulator:  # no unbiased sample, no true propensity
        rows = [r for r in rows if r[3] not in ("skyline", "truth")]
    trained = len(rows) * len(seeds)
    progress = Progress(len(data_seeds) * (trained + len(SIMPLE_ROWS) + 1))
    records, n_negs, budgets, models_cache = [], set(), {}, {}
    t0 = time.time()
    for d in data_seeds:
        splits, schema = first if first is not None else _load_draw(data, args, d)
        first = None
        clear_candidates()  # keyed by array id: never reuse across draws
        n_users = schema["user_id"].vocab_size if "user_id" in schema else None
        cand = scored_candidates(splits, schema, args.negatives)
        n_negs.add(int(cand.shape[1] - 1))
        pools = samplers_pools(splits)
        valid_sets = {sp: validation_set(splits, sp, n_users)
                      for sp in dict.fromkeys(TRAIN_SPLIT.get(r[3], "train") for r in rows)}
        steps = steps_arg or step_budget(splits, hp["epochs"], hp["batch_size"])
        budgets[d] = steps
        tag = "" if d is None else f"data seed {d}"
        for name in (*SIMPLE_ROWS, CROSS_DOMAIN_KNN):
            metrics, scores = ranking_evidence(simple_scores(name, splits, schema, cand), splits["test"])
            records.append({"name": name, "data_seed": d or 0, "seed": 0,
                            "role": "simple" if name in SIMPLE_ROWS else "baseline",
                            "metrics": metrics, "scores": scores})
            progress.step(f"{name} {tag}: {HEADLINE} {metrics.get(HEADLINE, math.nan):.4f}")
        for row_name, model_name, model_args, role in rows:
            for seed in seeds:
                metrics, scores = run_row(
                    model_name, model_args, splits, schema, seed=seed, steps=steps,
                    batch_size=hp["batch_size"], learning_rate=hp["learning_rate"],
                    dr_lr_ratio=hp["dr_lr_ratio"], candidates=cand, pools=pools,
                    train_split=TRAIN_SPLIT.get(role, "train"), models_cache=models_cache,
                    valid=valid_sets[TRAIN_SPLIT.get(role, "train")],
                    where=f"{row_name} {tag} seed {seed}: ", count=budget_count)
                counted = metrics["steps_c"] if budget_count == "lc" else metrics["steps"]
                if int(counted) != steps:
                    raise RuntimeError(f"{row_name} took {counted:.0f} optimizer steps "
                                       f"({'L_c' if budget_count == 'lc' else 'both optimizers'}), "
                                       f"the budget is {steps}")
                records.append({"name": row_name, "role": role, "data_seed": d or 0, "seed": seed,
                                "metrics": metrics, "scores": scores})
                extra_info = "".join(f", {k} {metrics[k]:.3f}" for k in ("group_rate", "propensity/auc")
                                     if k in metrics)
                took = (f"{steps} steps" if budget_count == "all" or not metrics.get("steps_r") else
                        f"{steps} L_c + {metrics['steps_r']:.0f} L_r steps")
                progress.step(f"{row_name} {tag} seed {seed}: {HEADLINE} "
                              f"{metrics.get(HEADLINE, math.nan):.4f} ({took}, best at "
                              f"{metrics.get('best_step', steps):.0f}{extra_info})")
        del splits, cand
        clear_candidates()
    shown = [HEADLINE] + [f"{HEADLINE}/{g}" for g in GROUPS] + ["test/B/ndcg@10"] + \
        [f"test/B/ndcg@10/{g}" for g in GROUPS[2:]] + [CROSS_METRIC, "test/A/hr@10",
                                                      "propensity/auc", "group_rate"]
    budget = sorted(set(budgets.values()))
    how = (f"{steps_arg} optimizer steps per row" if steps_arg else
           f"{hp['epochs']} epoch(s) of Algorithm 1 = {'/'.join(map(str, budget))} optimizer steps "
           f"per row (per data seed)")
    share = ("an IPS/DR row's L_r steps (second optimizer) count, the other rows take as many "
             "L_c steps" if budget_count == "all" else
             "only the L_c steps count (--budget lc): an IPS/DR row takes as many L_c steps as "
             "the other rows and its L_r passes on top")
    stopping = (f"fixed budget, checkpoint chosen on validation: {how}; {share}; "
                f"about 10 times per row the NDCG@10 of {VALID_ROWS} `valid` rows of the users "
                f"the row trains on ({VALID_NEGATIVES} negatives) is measured and the best "
                f"checkpoint's weights are scored")
    cross = cross_domain_headroom(records) if any(r["name"].endswith("+ true interest")
                                                  for r in records) else None
    notes = (f"Headline: NDCG@10 of domain A's test users (`{HEADLINE}`), one value per test user "
             f"(each user a bootstrap unit); each test row's positive ranked against "
             f"{sorted(n_negs)} sampled negatives it never interacted with (the same for every row "
             f"of a data seed). Groups: overlapping users, observed non-overlapping users (in "
             f"`train`), unobserved non-overlapping users (never in `train`). Every row is trained "
             f"by the same loop with the next-item loss at every position of the target history. "
             f"Floor: the backbone trained on `train` (the users the selection observed); skyline: "
             f"the same backbone, budget and number of rows trained on `train_unbiased` (as many "
             f"users drawn at random instead of by the selection): their gap is the selection "
             f"headroom, and the gap closed by +IPSCDR/+AMID the fraction of it they remove. Truth "
             f"rows (positive controls): the backbone given the simulator's hidden shared interest "
             f"(one more position of its sequence), and AMID with the true propensity instead of "
             f"the learned one. The cross-domain headroom is the true-interest row minus the "
             f"floor on `{CROSS_METRIC}` (both domains' unobserved non-overlapping users), and "
             f"the fraction of it each row closes is in `cross_domain_headroom` of results.json"
             f"{_cross_text(cross)}. `propensity/auc`: the learned user-level propensity's AUC "
             f"for being observed, over the non-overlapping users of `train` + `unobserved` "
             f"(the true propensity's AUC is `propensity/auc_true`, its calibration against the "
             f"true propensity `propensity/ece`); `group_rate`: share of (test row, sampled "
             f"user) pairs in one MIM interest group (a run at 0 or 1 fails). The simple "
             f"baselines are fitted on `train`. Data: {data}, data seeds "
             f"{[x for x in data_seeds if x is not None] or 'one draw'}, model seeds {seeds}. "
             f"Training: {hp}. Wall time {time.time() - t0:.0f} s.")
    extra = {"hyper_parameters": hp, "negatives": sorted(n_negs), "threshold": args.threshold,
             "group_size": group_size,
             "steps_per_row": {str(k): v for k, v in budgets.items()}, "data": data,
             "budget": budget_count, "pooling": pooling,
             "cross_domain_headroom": cross}
    title = f"AMID reproduction on {data}"
    names = {r[0] for r in rows}
    main_baseline, method = (f"{DISPLAY[backbones[0]]} + {x}" for x in ("IPSCDR", "AMID"))
    if simulator:
        out = evidence.write_evidence(
            Path(args.out), records, title=title, metric=HEADLINE,
            main_baseline=main_baseline if main_baseline in names else None,
            method=method if method in names else None,
            stopping=stopping, metrics=shown, notes=notes, extra=extra)
        return out
    plain = [{k: v for k, v in r.items() if k != "scores"} for r in records]
    return write_results(Path(args.out), plain, title=title, metrics=shown, plot_metric=HEADLINE,
                         notes=notes + " A real data set has no unbiased sample: no skyline, "
                         "no headroom.", extra=extra)


#: the cross-domain headroom's metric: NDCG@10 of both domains' unobserved
#: non-overlapping test users (the users AMID's claims are about)
CROSS_METRIC = "test/ndcg@10/unobserved_non_overlapping"


def cross_domain_headroom(records, *, n_boot: int = 1000) -> dict:
    """The cross-domain headroom through :func:`tfdebias.evaluation.evidence.analyse`: the
    same records with the true-interest row as the skyline (the original skyline and
    the other truth rows as context), on :data:`CROSS_METRIC`. Returns the headroom and
    per row its gap closed and paired difference from the floor."""
    from tfdebias.evaluation import evidence

    def role(r):
        if r["name"].endswith("+ true interest"):
            return "skyline"
        return "truth" if r["role"] in ("skyline", "truth") else r["role"]

    recs = [dict(r, role=role(r)) for r in records]
    ev = evidence.analyse(recs, metric=CROSS_METRIC, n_boot=n_boot)
    keep = ("mean", "ci95")
    return {"metric": CROSS_METRIC, "headroom": ev["headroom"],
            "rows": {r["name"]: {"gap_closed": {k: r["gap_closed"][k] for k in keep if k in r["gap_closed"]},
                                 "vs_floor": {k: r["vs_floor"][k] for k in keep}}
                     for r in ev["rows"] if r["role"] in ("method", "baseline") and "vs_floor" in r}}


def _cross_text(cross) -> str:
    if not cross:
        return ""
    h = cross["headroom"]["gap"]
    parts = [f"{n} {v['gap_closed'].get('mean', math.nan):+.2f}" for n, v in cross["rows"].items()]
    return (f" (here {h['mean']:.4f} [{h['ci95'][0]:.4f}, {h['ci95'][1]:.4f}]; closed: "
            f"{', '.join(parts)})")


#: the tuner's search space (``tfdebias tune``; read from the reproducer registry)
SEARCH_SPACE = {
    "learning_rate": {"min": 1e-4, "max": 1e-2, "log": True, "step": 10, "default": 1e-3},
    "batch_size": [256, 128, 512],
    "embedding_dim": [32, 64, 128],
    "threshold": [0.3, 0.2, 0.4, 0.5],
    "n_sampled_users": [64, 128, 256],
    "lambda_imputation": {"min": 1e-3, "max": 1.0, "log": True, "step": 10, "default": 0.1},
    "propensity_clip": [0.01, 0.05],
}

register_reproducer(Reproducer(
    name="amid", help="AMID (WWW 2024): evidence table of Tables 1-2 (NDCG@10/HR@10 per domain "
                      "and user group) with headroom, over data seeds",
    run=run_reproduce, add_arguments=_reproduce_args, default_data="cross_domain_sequences",
    default_seeds=1, search_space=SEARCH_SPACE))
