"""``tfdebias reproduce cp2rec``: the evidence table (docs/methods/cp2rec.md, "Reproduce").

For each data seed (a fresh draw of the simulator) x model seed, every row is trained with
the same budget and scored on the unbiased test block; tfdebias.evaluation.evidence turns
the records into headroom (skyline - floor), gap closed and paired bootstrap intervals.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from tfdebias.commands import positive_int
from tfdebias.errors import UsageError
from tfdebias.methods.cp2rec.data import PROPENSITY_CLIP, add_propensity, user_item
from tfdebias.methods.cp2rec.model import BACKBONES
from tfdebias.methods.cp2rec.protocol import GROUPS, evaluation_design, score_predictions, simple_rows, valid_metrics
from tfdebias.methods.cp2rec.train import PREDICT_BATCH, train_row
from tfdebias.models import predict

#: the rows ``--quick`` trains per backbone: the floor, the main baseline, the method, the
#: method with the true propensity (positive control, where the data ships it) and the
#: same features and tower trained with plain BCE (what reading the proxies alone gives)
QUICK_ROWS = ("{b}", "IPS-{b}", "CP2Rec-PROJ-{b}", "CP2Rec-PROJ-{b} (oracle p)", "CP2Rec-COS-{b} w/o ABT, BD")
#: the skyline row: the plain backbone trained on the simulator's ``train_unbiased``
SKYLINE = "{b} on uniform log (skyline)"
#: the plain-BCE row on CP2Rec's features and tower ("w/o ABT, BD") and its twin trained
#: on ``train_unbiased``: their difference is the headroom of a model that reads the
#: proxies (the skyline's is that of the plain backbone, which does not)
FEATURE_FLOOR = "CP2Rec-COS-{b} w/o ABT, BD"
#: what a row's uniform-log twin adds to its label (it trains with the row's settings)
TWIN_SUFFIX = " on uniform log"
FEATURE_SKYLINE = FEATURE_FLOOR + TWIN_SUFFIX

#: Table 3 of the paper, declared once for the tuner (``tfdebias tune cp2rec``;
#: registered as ``Reproducer.search_space``).
SEARCH_SPACE = {
    "lambda_reg": {"min": 1e-6, "max": 1e-2, "log": True, "step": 10, "default": 1e-6},
    "learning_rate": {"choices": [1e-4, 5e-4, 1e-3, 5e-3, 1e-2], "default": 1e-3},
    "batch_size": {"choices": [128, 256, 512, 1024], "default": 512},
    "gamma": {"min": 1e-5, "max": 1e-1, "log": True, "step": 10, "default": 1e-1},
    "beta": {"min": 1e-5, "max": 1e-1, "log": True, "step": 10, "default": 1e-2},
    "embedding_dim": {"fixed": 10},
}


def table_rows(backbone: str, oracle: bool = False) -> list[tuple[str, str, dict]]:
    """(row label, model name, model args) of one backbone's Table 4 + Table 6 block."""
    b = backbone.upper()
    rows = [
        (f"{b}", backbone, {}),
        (f"IPS-{b}", "cp2rec_baseline", {"loss": "ips"}),
        (f"SNIPS-{b}", "cp2rec_baseline", {"loss": "snips"}),
        (f"Rel-{b}", "cp2rec_baseline", {"loss": "rel"}),
        (f"CVIB-{b}", "cp2rec_baseline", {"loss": "cvib"}),
        (f"DIB-{b}", "cp2rec_baseline", {"loss": "dib"}),
        (f"CP2Rec-COS-{b}", "cp2rec", {"purifier": "cos"}),
        (f"CP2Rec-PROJ-{b}", "cp2rec", {"purifier": "proj"}),
        (f"CP2Rec-SOLVE-{b}", "cp2rec", {"purifier": "solve"}),
        (f"CP2Rec-PROJ-{b} (p = n_u n_i / N)", "cp2rec", {"purifier": "proj", "propensity": "independence"}),
        (f"CP2Rec-COS-{b} w/o ABT", "cp2rec", {"purifier": "cos", "abt": False, "loss": "bce"}),
        (f"CP2Rec-COS-{b} w/o ABT, BD", "cp2rec_baseline", {"loss": "bce"}),
    ]
    if oracle:
        rows += [
            (f"IPS-{b} (oracle p)", "cp2rec_baseline", {"loss": "ips", "propensity": "oracle"}),
            (f"CP2Rec-PROJ-{b} (oracle p)", "cp2rec", {"purifier": "proj", "propensity": "oracle"}),
        ]
    for _, name, args in rows:
        if name != backbone:
            args["backbone"] = backbone
    return rows


def row_role(label: str, backbone: str) -> str:
    """The evidence role of a trained row: the plain backbone is the floor, the CP2Rec
    variants (estimated propensity) are methods, everything else a baseline."""
    b = backbone.upper()
    if label == b:
        return "floor"
    if label == SKYLINE.format(b=b):
        return "skyline"
    if label.startswith("CP2Rec-") and "w/o" not in label and "oracle" not in label:
        return "method"
    return "baseline"


#: Table 3 of the paper: lambda (regularisation) and the loss weights gamma, beta. The
#: learning rate and batch size of Table 3 are the budget's instead (searched per row they
#: would give rows different numbers of optimizer steps; see ``--tune-trials``).
LAMBDA_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
WEIGHT_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def tuned_grid(model_name: str, model_args: dict) -> dict[str, tuple]:
    """The Table 3 grid a row's ``--tune-trials`` search draws from: lambda for every
    row built on CP2Rec's features and tower, plus the loss weights its loss has: gamma
    (L_B, with ABT) and beta (L_O, with a purifier) for CP2Rec, CVIB's alpha and gamma,
    DIB's alpha, gamma and beta (the paper names one "loss weight" range for all of
    them). The plain backbone (the floor and the skyline) is not searched: its settings
    are the budget's."""
    if model_name not in ("cp2rec", "cp2rec_baseline"):
        return {}
    grid = {"lambda_reg": LAMBDA_GRID}
    loss = model_args.get("loss", "ips")
    if model_name == "cp2rec":
        if model_args.get("abt", True):
            grid["gamma"] = WEIGHT_GRID
        if model_args.get("purifier", "proj") != "none":
            grid["beta"] = WEIGHT_GRID
    elif loss == "cvib":
        grid.update(cvib_alpha=WEIGHT_GRID, cvib_gamma=WEIGHT_GRID)
    elif loss == "dib":
        grid.update(dib_alpha=WEIGHT_GRID, dib_gamma=WEIGHT_GRID, dib_beta=WEIGHT_GRID)
    return grid


def trial_points(model_name: str, model_args: dict, n: int, seed: int = 0) -> list[dict]:
    """The ``n`` settings a row tries (fewer where its grid is smaller): first the row's
    own defaults (the untuned table's), then distinct grid points drawn at random
    (seeded, so every run tries the same points)."""
    import inspect
    import itertools

    from tfdebias.methods.cp2rec.model import CP2Rec

    grid = tuned_grid(model_name, model_args)
    if not grid or n < 1:
        return []
    keys = sorted(grid)
    defaults = {k: v.default for k, v in inspect.signature(CP2Rec.__init__).parameters.items()}
    first = tuple(float(model_args.get(k, defaults[k])) for k in keys)
    points = [pt for pt in itertools.product(*(grid[k] for k in keys)) if pt != first]
    rng = np.random.default_rng(seed)
    chosen = [first] + [points[i] for i in rng.permutation(len(points))[:max(0, n - 1)]]
    return [dict(zip(keys, pt)) for pt in chosen]


def _add_arguments(p):
    p.add_argument("--backbones", default=None,
                   help="comma-separated backbones (ncf, dcn), one evidence table each: the first "
                        "in OUT, the others in OUT/<backbone> (default ncf with --quick, else ncf,dcn)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs per row: the fixed budget, or the most with --stopping snips "
                        "(default 3 with --quick, else 5)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default 1024")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=None,
                   help="--stopping snips: epochs without improvement before stopping (default 1 "
                        "with --quick, else 2)")
    p.add_argument("--hidden-units", default="128,64", help="backbone MLP widths")
    p.add_argument("--oracle", action="store_true",
                   help="add rows trained with the simulator's true propensities (positive control; "
                        "always on with --quick where the data ships them)")
    p.add_argument("--tune-trials", type=int, default=0,
                   help="search each CP2Rec-feature row's Table 3 settings (lambda and its loss "
                        "weights gamma, beta, ...) with this many trials on the first data seed, "
                        "picked by the biased valid AUC (the paper's selection), then train every "
                        "data seed with the picks; 0 (default) = the rows' defaults")
    p.add_argument("--rows", default=None,
                   help="only the trained rows whose label contains one of these comma-separated "
                        "strings (floor, skyline, simple baselines and truth always run)")


def _resolve(args):
    """The run's settings from the parsed arguments (defaults depend on ``--quick``)."""
    from tfdebias import data as tdata

    backbones_arg = args.backbones or ("ncf" if args.quick else "ncf,dcn")
    backbones = [b.strip().lower() for b in backbones_arg.split(",") if b.strip()]
    bad = [b for b in backbones if b not in BACKBONES]
    if bad or not backbones or len(set(backbones)) != len(backbones):
        raise UsageError(f"--backbones: expected distinct ones of {BACKBONES}, got {backbones_arg!r}")
    epochs = args.epochs if args.epochs is not None else (3 if args.quick else 5)
    batch_size = args.batch_size if args.batch_size is not None else 1024
    patience = args.patience if args.patience is not None else (1 if args.quick else 2)
    stopping = getattr(args, "stopping", None) or "fixed"
    for k, v in (("--epochs", epochs), ("--batch-size", batch_size), ("--patience", patience)):
        if v < 1:
            raise UsageError(f"{k} must be >= 1, got {v}")
    if not args.learning_rate > 0:
        raise UsageError("--learning-rate must be > 0")
    try:
        hidden = [int(u) for u in args.hidden_units.split(",") if u.strip()]
    except ValueError:
        raise UsageError(f"--hidden-units: expected comma-separated integers, got {args.hidden_units!r}") from None
    data = tdata.evidence_data(args.data or "confounded_ctr")
    n_data = getattr(args, "data_seeds", None) or (3 if args.quick else 5)
    seeds = args.seeds or (1 if args.quick else 2)
    tune_trials = getattr(args, "tune_trials", 0) or 0
    if tune_trials < 0:
        raise UsageError(f"--tune-trials must be >= 0, got {tune_trials}")
    return dict(tune_trials=tune_trials, backbones=backbones, epochs=epochs, batch_size=batch_size, patience=patience,
                stopping=stopping, hidden=hidden, data=data, data_seeds=tdata.data_seeds(data, n_data),
                seeds=seeds)


def _trained_rows(backbone: str, cfg: dict, args, oracle: bool,
                  skyline: bool = True) -> list[tuple[str, str, dict, str]]:
    """(label, model name, model args, train split) of one table's trained rows, floor
    first and (with ``skyline``) the skyline second."""
    b = backbone.upper()
    rows = table_rows(backbone, oracle=oracle)
    if args.quick:
        keep = {r.format(b=b) for r in QUICK_ROWS}
        rows = [r for r in rows if r[0] in keep]
    if args.rows:
        wanted = [w.strip() for w in args.rows.split(",") if w.strip()]
        rows = [r for r in rows if r[0] == b or any(w in r[0] for w in wanted)]
        if len(rows) == 1 and not any(w in b for w in wanted):
            raise UsageError(f"--rows {args.rows!r} matches no row")
    out = []
    for label, name, margs in rows:
        margs = dict(margs)
        if name in BACKBONES:
            margs.update(embedding_dim=10, hidden_units=cfg["hidden"])
        else:
            margs["backbone_args"] = {"hidden_units": cfg["hidden"]}
        out.append((label, name, margs, "train"))
        if label == b and skyline:  # the skyline: the same model and budget on the uniform log
            out.append((SKYLINE.format(b=b), name, dict(margs), "train_unbiased"))
        if label == FEATURE_FLOOR.format(b=b) and skyline:  # its like-for-like twin
            out.append((FEATURE_SKYLINE.format(b=b), name, dict(margs), "train_unbiased"))
    return out


def _proj_note(schema) -> str:
    from tfdebias.layers.feature_embedding import FeatureEmbedding

    emb = FeatureEmbedding(schema, 10)
    names = [f.name for f in schema.proxies]
    n_c = len(emb.field_names(include=names)) + emb.dense_width(include=names)
    return (f"{n_c} proxy fields in d = 10" if n_c < 10 else
            f"{n_c} proxy fields >= d = 10, so the mean proxy field c_bar instead, proj_basis='auto'")


def _fit(name, margs, cols, splits, schema, cfg, args, data, seed):
    """:func:`train_row` of one row on ``cols`` with the table's budget and stopping rule
    (validated on ``splits["valid"]``): what every trained row and tuning trial runs."""
    return train_row(name, margs, cols, schema, seed=seed, epochs=cfg["epochs"],
                     batch_size=cfg["batch_size"], learning_rate=args.learning_rate,
                     valid_cols=splits["valid"], stopping=cfg["stopping"],
                     patience=cfg["patience"], data=data)


def _tune_rows(searches, splits, schema, cfg, args, data, inputs, progress) -> dict:
    """``--tune-trials``: train each searched row once per trial point (model seed 0, the
    table's budget) on this data seed's ``train`` and keep the point of highest biased
    valid AUC. Returns ``{row label: {"trials": [{values, "valid/auc"}], "best": values}}``
    (a row without trial points is left out)."""
    out = {}
    for label, name, margs, points in searches:
        trials = []
        for k, values in enumerate(points):
            model, _ = _fit(name, {**margs, **values}, splits["train"], splits, schema, cfg,
                            args, data, seed=0)
            p_valid = predict(model, splits["valid"], inputs=inputs, batch_size=PREDICT_BATCH)
            score = valid_metrics(splits["valid"], p_valid, schema.label.name)["valid/auc"]
            trials.append({**values, "valid/auc": score})
            progress.step(f"tuning {label} [{k + 1}/{len(points)}] {values}: valid/auc {score:.4f}")
            del model
            keras.backend.clear_session()
        if trials:
            best = max(trials, key=lambda t: t["valid/auc"])
            out[label] = {"trials": trials, "best": {k: v for k, v in best.items() if k != "valid/auc"}}
    return out


def _tuning_note(tuning: dict, cfg: dict) -> str:
    if not tuning:
        return "Settings: every row's defaults (no search). "
    picks = "; ".join(f"{label}: " + ", ".join(f"{k} {v:g}" for k, v in t["best"].items())
                      + f" (of {len(t['trials'])})" for label, t in tuning.items())
    return (f"Settings: Table 3 search, up to {cfg['tune_trials']} trials per searched row (the "
            f"row's defaults first, then distinct random points of its grid), each trained once on "
            f"data seed {cfg['data_seeds'][0]} with model seed 0 and this budget, picked by the "
            f"biased valid AUC; every data seed then trains with the picks (the uniform-log twin "
            f"of a row with its row's). Picks: {picks}. ")


def _run(args) -> Path:
    from tfdebias import data as tdata
    from tfdebias.evaluation.evidence import write_evidence
    from tfdebias.progress import Progress

    cfg = _resolve(args)
    data, seeds = cfg["data"], cfg["seeds"]
    t_start = time.time()
    plans, records, tuning = {}, {b: [] for b in cfg["backbones"]}, {}
    progress = None
    sizes, train_sizes = {}, {}
    for d in cfg["data_seeds"]:
        splits, schema = tdata.load(data, data_dir=args.data_dir, manual_dir=args.manual_dir, data_seed=d)
        missing = [s for s in ("train", "valid", "test") if s not in splits]
        if missing:
            raise UsageError(f"data set {data!r} lacks splits {missing}: CP2Rec needs biased train/valid "
                             "and an unbiased test")
        if not schema.proxies:
            raise UsageError(f"data set {data!r} declares no confounding proxies (role 'proxy'); CP2Rec needs them")
        # real data has no unbiased training sample: no skyline, a plain table
        has_skyline = "train_unbiased" in splits
        n_tr = len(splits["train"][schema.label.name])
        if has_skyline and n_tr != len(splits["train_unbiased"][schema.label.name]):
            raise UsageError(f"{data}: train and train_unbiased differ in size; the skyline needs the "
                             "floor's budget")
        splits = add_propensity(splits, schema)
        design = evaluation_design(splits, schema)
        inputs = [f.name for f in schema.inputs]  # what the served model reads
        train_sizes[d] = n_tr
        sizes = {"train": n_tr, "test": len(design["y"]), "test_users": int(design["units"].max()) + 1,
                 "test_items": int(len(np.unique(splits["test"][user_item(schema)[1]])))}
        if progress is None:
            oracle = (args.oracle or args.quick) and schema.exposure is not None
            plans = {b: _trained_rows(b, cfg, args, oracle, skyline=has_skyline) for b in cfg["backbones"]}
            searches = [(label, name, margs, trial_points(name, margs, cfg["tune_trials"]))
                        for b in cfg["backbones"] for label, name, margs, split in plans[b]
                        if split == "train"]
            total = len(cfg["data_seeds"]) * sum(seeds * len(rows) + 1 for rows in plans.values())
            progress = Progress(total + sum(len(pts) for *_, pts in searches))
            tuning = _tune_rows(searches, splits, schema, cfg, args, data, inputs, progress)
            for b in cfg["backbones"]:  # every data seed trains with the picks
                for label, _, margs, _ in plans[b]:
                    pick = tuning.get(label) or tuning.get(label.removesuffix(TWIN_SUFFIX))
                    if pick:
                        margs.update(pick["best"])
        for b in cfg["backbones"]:
            for label, role, metrics, scores in simple_rows(splits, schema, b, design):
                records[b].append({"name": label, "role": role, "data_seed": d, "seed": 0,
                                   "metrics": metrics, "scores": scores})
            progress.step(f"{b}: simple baselines + truth, data seed {d}")
            for label, name, margs, split in plans[b]:
                for seed in range(seeds):
                    model, info = _fit(name, margs, splits[split], splits, schema, cfg, args,
                                       data, seed=seed)
                    p_test = predict(model, splits["test"], inputs=inputs, batch_size=PREDICT_BATCH)
                    p_valid = predict(model, splits["valid"], inputs=inputs, batch_size=PREDICT_BATCH)
                    metrics, scores = score_predictions(design, p_test)
                    metrics.update(valid_metrics(splits["valid"], p_valid, schema.label.name))
                    metrics.update(info)
                    records[b].append({"name": label, "role": row_role(label, b), "data_seed": d,
                                       "seed": seed, "metrics": metrics, "scores": scores})
                    progress.step(f"{label} data seed {d} seed {seed}: test/auc {metrics['test/auc']:.4f} "
                                  f"({info['epochs_trained']} ep, {info['train_seconds']:.0f} s)")
                    del model
                    keras.backend.clear_session()

    out = Path(args.out)
    first = None
    for k, b in enumerate(cfg["backbones"]):
        B = b.upper()
        # the budget of each data seed (its train size varies a little between draws)
        budget = sorted({cfg["epochs"] * -(-n // cfg["batch_size"]) for n in train_sizes.values()})
        steps = str(budget[0]) if len(budget) == 1 else f"{budget[0]}-{budget[-1]} (by data seed)"
        if cfg["stopping"] == "fixed":
            stopping = (f"fixed budget: {cfg['epochs']} epochs = {steps} optimizer steps of batch "
                        f"{cfg['batch_size']} for every trained row of a data seed (train and "
                        f"train_unbiased have the same number of rows), no early stopping")
        else:
            stopping = (f"early stopping on the self-normalised IPS-weighted log loss of the biased valid "
                        f"split (evidence.snips_logloss, propensity p_hat = n_u n_i / N from train, clipped "
                        f"at {PROPENSITY_CLIP}), "
                        f"patience {cfg['patience']}, at most {cfg['epochs']} epochs = {steps} optimizer "
                        f"steps of batch {cfg['batch_size']}; the best epoch's weights are kept "
                        f"(column `steps`)")
        proj_note = _proj_note(schema)
        notes = (
            f"Data: `{data}`, data seeds {cfg['data_seeds']} (each a fresh draw of the simulator), "
            f"{seeds} model seed(s) each; {sizes['train']} training rows, unbiased test block "
            f"{sizes['test']} rows over {sizes['test_users']} users x {sizes['test_items']} items. "
            f"Test units for the bootstrap: test users. "
            + (f"Skyline: `{B}` with the same budget trained on `train_unbiased` (uniform logging policy, "
               f"uniform positions, same size as `train`); `{FEATURE_SKYLINE.format(b=B)}`: the "
               f"plain-BCE row on CP2Rec's features and tower trained the same way, so its "
               f"difference to `{FEATURE_FLOOR.format(b=B)}` is the headroom of a model that "
               f"reads the proxies. " if has_skyline else "")
            + f"Simple rows: the item's smoothed CTR in train, and logistic regression on {B}'s input "
            f"features; truth = the simulator's true click probability (context). Groups: "
            f"`test/auc/exposed-light` / `-heavy` = test items whose logged shows in train are at most / "
            f"above the median over the test items. Every trained row: Adam lr {args.learning_rate}, "
            f"d = 10, MLP {cfg['hidden']}. Each step is one optimizer update: SOLVE's CLUB likelihood "
            f"step and CVIB's pass over permuted rows are computed inside that same update, so no row "
            f"gets extra updates. Propensities for IPS/SNIPS/CP2Rec: p_hat = n_u n_i / N x kappa_hat(position) "
            f"from train (kappa_hat: the position-based click model fit on train; n_u n_i / N alone where "
            f"the data has no position proxy or the row says so); rows marked 'oracle p' read the "
            f"simulator's true exposure probability x true examination. CP2Rec's L_U is self-normalised "
            f"(sum w l / sum w per batch); PROJ removes from z the span of all proxy fields "
            f"({proj_note}); the purifiers see c through stop_gradient. "
            + _tuning_note(tuning, cfg)
            + f"Wall time {time.time() - t_start:.0f} s.")
        where = out if k == 0 else out / b
        extra = {"data": data, "data_seeds": cfg["data_seeds"], "backbone": b,
                 "stopping_rule": cfg["stopping"], "epochs": cfg["epochs"],
                 "batch_size": cfg["batch_size"], "steps_per_row": budget, "tuning": tuning}
        if not has_skyline:
            from tfdebias.evaluation.results import write_results

            plain = [{k2: v for k2, v in r.items() if k2 != "scores"} for r in records[b]]
            written = write_results(
                where, plain, title=f"CP2Rec (Table 4/6 shape), {B} backbone, on {data} (no skyline)",
                metrics=["test/auc", *[f"test/auc/{g}" for g in GROUPS], "test/logloss", "valid/auc"],
                plot_metric="test/auc", notes=f"Stopping: {stopping}. No headroom: {data} has no unbiased "
                f"training sample to train a skyline on.\n\n{notes}", extra=extra)
            first = first or written
            continue
        written = write_evidence(
            where, records[b], title=f"CP2Rec (Table 4/6 shape), {B} backbone, on {data}",
            metric="test/auc", main_baseline=f"IPS-{B}" if any(r["name"] == f"IPS-{B}" for r in records[b]) else None,
            method=f"CP2Rec-PROJ-{B}" if any(r["name"] == f"CP2Rec-PROJ-{B}" for r in records[b]) else None,
            stopping=stopping,
            metrics=["test/auc", *[f"test/auc/{g}" for g in GROUPS], "test/logloss", "valid/auc"],
            notes=notes, extra=extra)
        first = first or written
    return first


def _register_reproducer():
    from tfdebias.methods import Reproducer, register_reproducer

    register_reproducer(Reproducer(
        name="cp2rec",
        help="CP2Rec (ACM MM 2023) Table 4/6 as evidence tables: NCF/DCN x {plain (floor), skyline "
             "(uniform log), IPS, SNIPS, Rel, CVIB, DIB, CP2Rec-COS/PROJ/SOLVE} + ablations + "
             "popularity, LR, truth; --data-seeds default 5 (3 with --quick), --seeds default 2 "
             "(1 with --quick); --quick trains only NCF, IPS-NCF, CP2Rec-PROJ-NCF and the skyline",
        run=_run, add_arguments=_add_arguments, default_data="confounded_ctr", default_seeds=0,
        search_space=SEARCH_SPACE))


_register_reproducer()
