"""Run directories: everything one training run leaves behind, written atomically.

A run writes into ``<out>.partial/`` while it trains and is renamed to ``<out>`` only when
it has finished, so a directory named ``<out>`` is always complete. A killed run leaves
``<out>.partial/`` behind; rerunning the same command resumes from its last finished
epoch (Keras ``BackupAndRestore``) when the ``config.json`` there matches.

Layout of a finished run::

    config.json          everything needed to rerun (data, model, hyper-parameters, seed)
    metrics.json         the evaluation protocol's flat dict of named metrics
    history.csv          one row per epoch (losses, metrics)
    model.weights.h5     the restored best weights
    logs/                TensorBoard event files
    plots/               learning curves, calibration by true propensity (simulators)
    export/              SavedModel (``tfdebias export`` writes TF Serving layouts)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tfdebias.atomic import jsonable, publish_dir, write_json
from tfdebias.errors import UsageError

CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
WEIGHTS = "model.weights.h5"


def read_json(path: str | os.PathLike):
    """The JSON value in ``path``; a malformed file is a :class:`DataError` naming its line."""
    from tfdebias.errors import DataError

    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON: {e.msg}", path=path, line=e.lineno,
                        expected="the JSON tfdebias wrote there") from None
    except UnicodeDecodeError:
        raise DataError("is not UTF-8 text", path=path, expected="the JSON tfdebias wrote there") from None


def check_out_path(path: str | os.PathLike) -> Path:
    """Refuse an output path that cannot become a directory: the path itself or one of its
    parents exists as something other than a directory."""
    p = Path(path).absolute()
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                what = "the output path itself" if q == p else "a parent of the output path"
                raise UsageError(f"{q} is a file, not a directory ({what} {p}); choose another --out")
            break
    return p


class RunDir:
    """A run directory under construction (``<final>.partial``) and its final name."""

    def __init__(self, final: str | os.PathLike):
        self.final = Path(final).absolute()
        self.work = self.final.with_name(self.final.name + ".partial")

    # paths inside the work directory -----------------------------------------------
    def path(self, *parts: str) -> Path:
        return self.work.joinpath(*parts)

    @property
    def backup_dir(self) -> Path:
        return self.path("backup")

    @property
    def logs_dir(self) -> Path:
        return self.path("logs")

    @property
    def plots_dir(self) -> Path:
        return self.path("plots")

    @classmethod
    def start(cls, final, config: dict, *, overwrite: bool = False) -> tuple["RunDir", bool]:
        """Open ``final`` for writing; returns ``(run_dir, resumed)``.

        Refuses an existing finished run unless ``overwrite``; resumes a ``.partial``
        whose config matches, and starts afresh when it does not.
        """
        run = cls(final)
        if run.final.exists():
            if not overwrite:
                raise UsageError(
                    f"run directory {run.final} already exists; choose another --out "
                    "or pass --overwrite"
                )
        resumed = False
        if run.work.exists():
            old = run.work / CONFIG
            if old.exists() and read_json(old) == json.loads(json.dumps(config, default=jsonable)):
                resumed = (run.backup_dir.exists())
            else:
                shutil.rmtree(run.work)
        run.work.mkdir(parents=True, exist_ok=True)
        write_json(run.path(CONFIG), config)
        return run, resumed

    def finish(self) -> Path:
        """Move the finished run into place and return its final path."""
        if self.backup_dir.exists():
            shutil.rmtree(self.backup_dir)
        publish_dir(self.work, self.final)
        return self.final


def open_finished(path: str | os.PathLike) -> Path:
    """Check that ``path`` is a finished run directory and return it."""
    p = Path(path)
    if not p.is_dir():
        partial = p.with_name(p.name + ".partial")
        hint = f" (an unfinished run is at {partial}; rerun the train command to resume)" if partial.exists() else ""
        raise UsageError(f"run directory {p} does not exist{hint}")
    if not (p / CONFIG).exists():
        raise UsageError(f"{p} is not a tfdebias run directory: it has no {CONFIG}")
    if not (p / WEIGHTS).exists():
        raise UsageError(f"{p} has no {WEIGHTS}; the run did not finish")
    return p
