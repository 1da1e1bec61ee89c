"""The command registry and the arguments commands share.

``tfdebias`` (:mod:`tfdebias.cli`) builds its parser from :data:`COMMANDS`; a module
adds a sub-command with :func:`command` (the export and tune commands live beside
their packages), and a method's ``tfdebias reproduce`` entry adds its own arguments with
the same argument types. Everything here is plain ``argparse``; nothing imports
TensorFlow.

>>> int_at_least(1)("3")
3
>>> key_value('hidden_units=[64, 32]')
('hidden_units', [64, 32])
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

#: name -> (help, add_arguments(parser), run(args) -> exit code)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {}


def command(name: str, help: str):
    """``@command(name, help)(add_arguments)`` on ``run(args)``: register a sub-command."""

    def deco(add_arguments):
        def wrap(run):
            COMMANDS[name] = (help, add_arguments, run)
            return run

        return wrap

    return deco


def keras_verbosity() -> int:
    """Keras ``verbose``: a progress bar on a terminal, one line per epoch otherwise."""
    return 1 if sys.stdout.isatty() else 2


def int_at_least(minimum: int, what: str = "integer"):
    """An argparse ``type``: an integer ``>= minimum``, else one clear message."""

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an {what}, got {s!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected an {what} >= {minimum}, got {v}")
        return v

    return parse


#: an integer >= 1 (counts: epochs, seeds, trials, steps)
positive_int = int_at_least(1, "integer")


def positive_float(s: str) -> float:
    """An argparse ``type``: a number > 0."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {v}")
    return v


def key_value(s: str):
    """An argparse ``type``: ``KEY=VALUE`` with VALUE read as JSON (else kept as text)."""
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (VALUE as JSON), got {s!r}")
    k, v = s.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def add_data_args(p: argparse.ArgumentParser, *, required_data=False, default_data=None):
    """``--data``, ``--data-dir`` and ``--manual-dir``."""
    p.add_argument("--data", required=required_data, default=default_data,
                   help="data set name, e.g. confounded_ctr or amazon_reviews/cloth_sport")
    p.add_argument("--data-dir", help="TFDS data directory (default $TFDEBIAS_DATA_DIR or ~/tensorflow_datasets)")
    p.add_argument("--manual-dir", help="folder with the raw files of a real data set")


def add_fit_args(p: argparse.ArgumentParser, *, model_arg_help: str, overwrite_help: str):
    """The training settings ``train`` and ``tune`` share: ``--optimizer``, ``--patience``,
    ``--seed``, ``--protocol``, ``--model-arg`` and ``--overwrite``."""
    p.add_argument("--optimizer", default="lazy_adam", help="lazy_adam (default), adam, adagrad, sgd")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocol", default="ctr", help="evaluation protocol (default ctr)")
    p.add_argument("--model-arg", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help=model_arg_help)
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)


def print_metrics(metrics: dict) -> None:
    """A markdown table of ``{"split/metric": value}``: one row per split."""
    split_metrics = {k: v for k, v in metrics.items() if "/" in k}
    splits = sorted({k.split("/")[0] for k in split_metrics}, key=lambda s: (s != "valid", s != "test", s))
    names = sorted({k.split("/", 1)[1] for k in split_metrics})
    print("| split | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for s in splits:
        print(f"| {s} | " + " | ".join(f"{split_metrics.get(f'{s}/{n}', float('nan')):.4f}" for n in names) + " |")


__all__ = ["COMMANDS", "add_data_args", "add_fit_args", "command", "int_at_least", "key_value",
           "keras_verbosity", "positive_float", "positive_int", "print_metrics"]
