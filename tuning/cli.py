"""``tfdebias tune``: a resumable keras-tuner search whose best trial becomes a run."""

from __future__ import annotations

from tfdebias.commands import (add_data_args, add_fit_args, command, keras_verbosity, positive_int,
                               print_metrics)


def _tune_args(p):
    p.add_argument("method", help="model or method with a registered search space (e.g. deepfm, dcn, ncf)")
    add_data_args(p, required_data=True)
    p.add_argument("--tuner", default="bayesian", choices=["bayesian", "random", "grid", "hyperband"],
                   help="bayesian (default; Gaussian-process BO, the closest keras-tuner has to the "
                        "papers' Optuna searches), random, grid or hyperband")
    p.add_argument("--max-trials", type=positive_int, default=10, help="trials in total (default 10)")
    p.add_argument("--dir", default=None, help="search folder (default runs/tune-<method>-<data>); "
                   "rerun the same command to resume")
    p.add_argument("--out", help="best run directory (default DIR/best)")
    p.add_argument("--epochs", type=positive_int, default=20, help="epochs per trial (hyperband: the most)")
    p.add_argument("--monitor", default="val_auc", help="objective and early-stopping metric (default val_auc)")
    add_fit_args(p, model_arg_help="a fixed (not searched) model constructor argument, VALUE as JSON",
                 overwrite_help="discard an existing search in --dir")


@command("tune", "search hyper-parameters with keras-tuner; the best trial becomes a run directory")(_tune_args)
def _tune(args) -> int:
    from tfdebias.training import TrainConfig
    from tfdebias.tuning.search import tune

    base = TrainConfig(data=args.data, model=args.method, model_args=dict(args.model_arg),
                       epochs=args.epochs, patience=args.patience, monitor=args.monitor,
                       optimizer=args.optimizer, seed=args.seed, protocol=args.protocol)
    directory = args.dir or f"runs/tune-{args.method}-{args.data.replace('/', '_')}"
    res = tune(args.method, base, directory, tuner=args.tuner, max_trials=args.max_trials,
               out=args.out, data_dir=args.data_dir, manual_dir=args.manual_dir,
               overwrite=args.overwrite, verbose=keras_verbosity())
    print(f"Trials completed: {res.trials_completed} ({res.trials_run_now} in this session)")
    print(f"Best {base.monitor}: {res.best_score:.4f} with {res.best_values}")
    print_metrics(res.metrics)
    print(f"Best run directory: {res.run_dir}")
    return 0
