"""One module per paper method and its baselines (cp2rec, dadin, damcar, amid).

Importing this package imports every method module, so each registers its models with
:func:`tfdebias.models.register`, its protocols with
:func:`tfdebias.evaluation.protocols.register` and its ``tfdebias reproduce`` entry with
:func:`register_reproducer`.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Callable


@dataclasses.dataclass
class Reproducer:
    """``tfdebias reproduce NAME``: extra CLI arguments and the function that runs it.

    ``run(args)`` gets the parsed namespace (``data``, ``data_dir``, ``manual_dir``,
    ``seeds``, ``quick``, ``out`` plus the method's own) and returns the output folder,
    which must hold ``results.json`` and ``results.md``.
    """

    name: str
    help: str
    run: Callable
    add_arguments: Callable = lambda parser: None
    default_data: str | None = None
    default_seeds: int = 5
    #: the paper's hyper-parameter grid for ``tfdebias tune NAME`` (see tfdebias.tuning.spaces)
    search_space: dict | None = None


REPRODUCERS: dict[str, Reproducer] = {}


def register_reproducer(rep: Reproducer) -> Reproducer:
    REPRODUCERS[rep.name] = rep
    return rep


for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")
