"""DADIN's data for the evidence table: one simulator draw's splits (checked to be a
cross-domain log with a ``train_unbiased`` split), the target-domain rows the
single-domain baselines train on, and the rows each table group trains on."""

from __future__ import annotations

from tfdebias.errors import UsageError


def load_splits(data: str, *, data_dir=None, manual_dir=None, data_seed=None) -> tuple:
    """``(schema, splits)`` of one draw of ``data``: ``train``, ``train_unbiased`` and
    ``test``. Raises :class:`UsageError` when the data set has no domain feature or no
    ``train_unbiased`` split (a simulator that can draw the log without the bias)."""
    from tfdebias import data as tdata

    builder = tdata.prepare(data, data_dir=data_dir, manual_dir=manual_dir, data_seed=data_seed)
    schema = tdata.load_schema(builder)
    if not schema.by_role("domain"):
        raise UsageError(f"data set {data!r} has no domain feature; DADIN needs a cross-domain log")
    if "train_unbiased" not in builder.info.splits:
        raise UsageError(
            f"data set {data!r} has no train_unbiased split: the evidence table needs a "
            "simulator that can draw the log without the bias (cross_domain_ctr); train "
            "on real data with `tfdebias train`")
    splits = {s: tdata.read_split(builder, s) for s in ("train", "train_unbiased", "test")}
    return schema, splits


def target_domain_rows(train: dict, schema) -> dict:
    """The rows of ``train`` from the target domain (domain feature == 1)."""
    dom = schema.by_role("domain")[0].name
    return {k: v[train[dom] == 1] for k, v in train.items()}


def group_rows(group: str, splits: dict, target_rows: dict) -> dict:
    """The rows a table group trains on: the target-domain rows of ``train`` for the
    single-domain rows (groups ``single`` and ``target``), ``train_unbiased`` for the
    skyline, all of ``train`` otherwise."""
    return (target_rows if group in ("single", "target") else
            splits["train_unbiased"] if group == "skyline" else splits["train"])


def model_sample(train: dict, schema, n: int = 8) -> dict:
    """The first ``n`` rows of ``train`` without the label (builds a model)."""
    return {k: v[:n] for k, v in train.items() if k != schema.label.name}
