"""The ``tfdebias`` command line. Thin: parse, call the library, print.

Sub-commands register themselves in :data:`COMMANDS`; method modules add
``tfdebias reproduce METHOD`` entries through :func:`tfdebias.methods.register_reproducer`.
Every error a user can cause prints one line ``tfdebias: error: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from tfdebias.commands import (COMMANDS, add_data_args, add_fit_args, command, keras_verbosity,
                               positive_float, positive_int, print_metrics)
from tfdebias.errors import TfdebiasError, UsageError
from tfdebias.precision import PRECISIONS

#: modules that add more sub-commands when they are importable (export, tune, ...)
PLUGIN_MODULES = ("tfdebias.export.cli", "tfdebias.tuning.cli")


# -- datasets -------------------------------------------------------------------------


def _describe(cls) -> str:
    """One line about a data set: its module docstring's first sentence, where the
    builder class's own docstring only points there."""
    own = (cls.__doc__ or "").strip().splitlines()
    if own and "module docstring" not in own[0]:
        return own[0]
    mod = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
    return mod[0].replace("``", "") if mod else ""


def _datasets_args(p):
    sub = p.add_subparsers(dest="action", required=True, metavar="{list,prepare}")
    sub.add_parser("list", help="list the data sets and their splits")
    pp = sub.add_parser("prepare", help="build a data set into the TFDS data directory")
    pp.add_argument("name", help="data set name (see `tfdebias datasets list`)")
    pp.add_argument("--manual-dir", help="folder holding the raw files of a real data set")
    pp.add_argument("--data-dir", help="TFDS data directory")


@command("datasets", "list or prepare data sets")(_datasets_args)
def _datasets(args) -> int:
    from tfdebias import data

    if args.action == "list":
        import tensorflow_datasets as tfds

        for name in data.available():
            cls = tfds.builder_cls(name)
            configs = [c.name for c in (cls.BUILDER_CONFIGS or [])]
            doc = _describe(cls)
            print(f"{name:28s} configs: {', '.join(configs) or '-':32s} {doc}")
        return 0
    builder = data.prepare(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir)
    print(f"Prepared {builder.info.full_name} in {builder.data_dir}")
    for split, info in sorted(builder.info.splits.items()):
        print(f"  {split:12s} {info.num_examples:>10,d} examples")
    return 0


# -- train / evaluate / quickstart ---------------------------------------------------


def _train_args(p):
    add_data_args(p, required_data=True)
    p.add_argument("--model", required=True, help="model or method name (e.g. deepfm, dcn, ncf)")
    p.add_argument("--out", help="run directory (default runs/<data>-<model>-s<seed>)")
    p.add_argument("--epochs", type=positive_int, default=20)
    p.add_argument("--batch-size", type=positive_int, default=1024)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate")
    p.add_argument("--steps-per-execution", type=positive_int, default=8,
                   help="training steps per compiled call (default 8; 1 = one call per step)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="float32 (default) or mixed_bfloat16: bfloat16 compute with float32 "
                        "variables and loss, for backbones on hardware with bfloat16 "
                        "arithmetic (see tfdebias.precision)")
    p.add_argument("--strategy", default="auto", help="auto, default, mirrored, multi-worker")
    add_fit_args(p, model_arg_help="a model constructor argument, VALUE as JSON (repeatable)",
                 overwrite_help="replace an existing run directory")


@command("train", "train a model on a data set and write a run directory")(_train_args)
def _train(args) -> int:
    from tfdebias.training import TrainConfig, train

    cfg = TrainConfig(data=args.data, model=args.model, model_args=dict(args.model_arg),
                      epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                      optimizer=args.optimizer, patience=args.patience, seed=args.seed,
                      strategy=args.strategy, protocol=args.protocol,
                      steps_per_execution=args.steps_per_execution, precision=args.precision)
    if args.strategy == "multi-worker":
        try:
            from tfdebias.training.distributed import train_multi_worker
        except ModuleNotFoundError:
            raise UsageError("--strategy multi-worker is not available in this build") from None

        result = train_multi_worker(cfg, args.out, data_dir=args.data_dir, manual_dir=args.manual_dir,
                                    overwrite=args.overwrite)
    else:
        result = train(cfg, args.out, data_dir=args.data_dir, manual_dir=args.manual_dir,
                       overwrite=args.overwrite, verbose=keras_verbosity())
    if result.metrics:  # non-chief multi-worker processes have none
        print_metrics(result.metrics)
    print(f"Run directory: {result.run_dir}")
    return 0


def _evaluate_args(p):
    p.add_argument("run_dir", help="a finished run directory")
    p.add_argument("--data-dir", help="TFDS data directory")


@command("evaluate", "re-score a finished run with its protocol")(_evaluate_args)
def _evaluate(args) -> int:
    from tfdebias.training import evaluate_run

    metrics = evaluate_run(args.run_dir, data_dir=args.data_dir)
    print_metrics(metrics)
    return 0


def _quickstart_args(p):
    p.add_argument("--out", default="runs/quickstart", help="where to write the runs (default runs/quickstart)")
    p.add_argument("--data-dir", help="TFDS data directory")
    p.add_argument("--epochs", type=positive_int, default=8)
    p.add_argument("--overwrite", action="store_true")


@command("quickstart", "train, evaluate and export on the built-in confounded-CTR simulator")(_quickstart_args)
def _quickstart(args) -> int:
    from tfdebias import quickstart

    quickstart.run(out=args.out, data_dir=args.data_dir, epochs=args.epochs,
                   overwrite=args.overwrite, verbose=keras_verbosity())
    return 0


# -- reproduce -------------------------------------------------------------------------


def _reproduce_args(p):
    from tfdebias import methods

    sub = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    for name, rep in sorted(methods.REPRODUCERS.items()):
        mp = sub.add_parser(name, help=rep.help, description=rep.help)
        add_data_args(mp, default_data=rep.default_data)
        mp.add_argument("--seeds", type=positive_int, default=None,
                        help="model seeds per row and data seed (default: 1 with --quick, else "
                             "the paper's count)")
        mp.add_argument("--data-seeds", type=positive_int, default=None,
                        help="simulator draws: each data seed regenerates the simulator and "
                             "trains every row on it (default 3 with --quick, else 5; real "
                             "data sets have one draw)")
        mp.add_argument("--stopping", choices=("fixed", "snips"), default="fixed",
                        help="fixed (default): every row takes the same number of optimizer "
                             "steps, no early stopping; snips: early stopping on a "
                             "self-normalised IPS-weighted validation log loss, where the "
                             "method has propensities")
        mp.add_argument("--quick", action="store_true", help="small budget for a smoke run")
        mp.add_argument("--out", default=None, help="output folder (default runs/reproduce-<method>)")
        rep.add_arguments(mp)


@command("reproduce", "reproduce a paper's results table")(_reproduce_args)
def _reproduce(args) -> int:
    from tfdebias import methods

    rep = methods.REPRODUCERS[args.method]
    if args.seeds is None and rep.default_seeds:  # None: the method decides itself
        args.seeds = 1 if args.quick else rep.default_seeds
    if args.data_seeds is None:
        args.data_seeds = 3 if args.quick else 5
    if args.out is None:
        args.out = f"runs/reproduce-{args.method}"
    from tfdebias.training.run_dir import check_out_path

    check_out_path(args.out)  # before any work
    out = rep.run(args)
    print(f"Results: {Path(out) / 'results.md'}")
    return 0


# -- entry point -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from tfdebias import __version__

    for mod in PLUGIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    parser = argparse.ArgumentParser(
        prog="tfdebias",
        description="Debiasing methods for recommendation in TensorFlow and Keras 3.")
    parser.add_argument("--version", action="version", version=f"tfdebias {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's own start-up and log messages")
    parser.add_argument(
        "--cpu-threads", default="auto", metavar="POLICY",
        help="TensorFlow's CPU thread pools for this run: auto (default: on a CPU-only "
             "machine 2 inter-op threads and cores/2 intra-op threads, so a training "
             "step does not oversubscribe the cores), tensorflow (its own defaults) or "
             "INTER,INTRA (e.g. 2,1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv=None) -> int:
    from tfdebias.quiet import start_tensorflow

    argv = list(sys.argv[1:] if argv is None else argv)
    # before anything imports TensorFlow (building the parser imports the methods):
    # its start-up chatter is not tfdebias' output
    start_tensorflow(verbose="--verbose" in argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from tfdebias.training.threads import configure_cpu_threads

        try:  # before any command runs a TensorFlow op: the pools are fixed from then on
            configure_cpu_threads(args.cpu_threads)
        except UsageError as e:
            parser.error(f"argument --cpu-threads: {e}")
        return COMMANDS[args.command][2](args) or 0
    except TfdebiasError as e:
        print(f"tfdebias: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tfdebias: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
