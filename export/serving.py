"""The TF Serving layout: ``MODELS_DIR/NAME/VERSION/`` plus a ``models.config``.

What :func:`export_model` (and ``tfdebias export``) writes::

    MODELS_DIR/
      models.config                  TF Serving model-config file listing every model here
      NAME/
        VERSION/                     an integer; TF Serving serves the highest by default
          saved_model.pb  variables/ fingerprint.pb
          assets.extra/
            tf_serving_warmup_requests   TFRecord of PredictionLog (tensorflow-serving-api)
            tfdebias.json                run config and schema the export came from
          signature.txt              every signature's inputs and outputs, a sample request

The version directory is written as ``NAME/.VERSION.tmp-PID-XXXX`` (TF Serving ignores
names that are not integers) and renamed into place once complete, after the optional
clean-process parity check (:mod:`tfdebias.export.verify`) has passed. An existing
version is refused unless ``overwrite``. Temporary directories of killed exports (their
process is gone) are removed by the next export into the same model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np

from tfdebias.atomic import remove_stale, staging_dir, write_text
from tfdebias.errors import UsageError
from tfdebias.export.saved_model import (DEFAULT_SIGNATURE, PREDICTION,
                                         write_saved_model)

WARMUP_FILE = "tf_serving_warmup_requests"
SIGNATURE_FILE = "signature.txt"
MODELS_CONFIG = "models.config"
#: batch sizes of the serving_default warm-up requests (rows taken from the data)
WARMUP_BATCH_SIZES = (1, 8, 64)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclasses.dataclass
class ExportResult:
    path: Path                      # MODELS_DIR/NAME/VERSION
    name: str
    version: int
    models_config: Path
    warmup_requests: int            # records written (0 without tensorflow-serving-api)
    verified: dict | None = None    # the parity report when --verify


# -- versions -------------------------------------------------------------------------


def existing_versions(model_dir: str | os.PathLike) -> list[int]:
    """Integer version directories of ``model_dir`` holding a ``saved_model.pb``."""
    d = Path(model_dir)
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir()
                  if p.name.isdigit() and (p / "saved_model.pb").exists())


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise UsageError(f"model name {name!r}: use letters, digits, '_', '-' or '.'")
    return name


# -- signatures -------------------------------------------------------------------------


def read_signatures(saved_model_dir) -> dict:
    """``{signature: {"inputs": {key: (dtype, shape)}, "outputs": {...}}}`` from the
    ``saved_model.pb`` (what TF Serving sees; no graph is loaded)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    graph = next((g for g in sm.meta_graphs if "serve" in g.meta_info_def.tags), sm.meta_graphs[0])

    def info(tensors):
        return {k: (tf.dtypes.as_dtype(t.dtype).name,
                    tuple(None if d.size < 0 else d.size for d in t.tensor_shape.dim))
                for k, t in sorted(tensors.items())}

    return {name: {"inputs": info(sd.inputs), "outputs": info(sd.outputs)}
            for name, sd in sorted(graph.signature_def.items())
            if not name.startswith("__")}


def _shape_str(shape) -> str:
    return "(" + ", ".join("batch" if i == 0 and d is None else ("?" if d is None else str(d))
                           for i, d in enumerate(shape)) + ("," if len(shape) == 1 else "") + ")"


def signature_text(signatures: dict, *, name: str, version: int, schema=None,
                   sample: dict | None = None, source: dict | None = None) -> str:
    """The export's ``signature.txt``: how to call every signature."""
    feats = {f.name: f for f in schema} if schema is not None else {}
    lines = [f"TF Serving model {name!r}, version {version}", ""]
    if source:
        lines += [f"Exported from run {source.get('run_dir', '?')}: model {source.get('model')!r} "
                  f"trained on {source.get('data')!r}.", ""]
    lines += ["Every input is a batched tensor: the first dimension is the batch (any size).",
              "Ids are int64 with 0 meaning padding/unknown; dense features are float32.", ""]
    for sig, io in signatures.items():
        lines.append(f"signature {sig!r}" + ("  (the default: requests that name no signature)"
                                             if sig == DEFAULT_SIGNATURE else ""))
        lines.append("  inputs:")
        for k, (dt, shape) in io["inputs"].items():
            f = feats.get(k)
            desc = f"  {f.role}" + (f", {f.vocab_size} ids" if f is not None and f.vocab_size else "") \
                + (f": {f.description}" if f is not None and f.description else "") if f is not None else ""
            lines.append(f"    {k:24s} {dt:8s} {_shape_str(shape):14s}{desc}")
        lines.append("  outputs:")
        for k, (dt, shape) in io["outputs"].items():
            what = "  the probability the model serves (model(features)[:, 0])" \
                if sig == DEFAULT_SIGNATURE and k == PREDICTION else ""
            lines.append(f"    {k:24s} {dt:8s} {_shape_str(shape):14s}{what}")
        lines.append("")
    if sample:
        inst = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in sample.items()
                if k in signatures.get(DEFAULT_SIGNATURE, {}).get("inputs", {})}
        body = json.dumps({"signature_name": DEFAULT_SIGNATURE, "instances": [inst]})
        lines += ["REST request (TF Serving on port 8501), one row of the held-out data:",
                  f"  curl -s -X POST http://localhost:8501/v1/models/{name}:predict \\",
                  f"       -d '{body}'", "",
                  "gRPC: tensorflow_serving.apis.predict_pb2.PredictRequest with "
                  f"model_spec.name={name!r}, model_spec.signature_name='{DEFAULT_SIGNATURE}' and one",
                  "TensorProto per input (tf.make_tensor_proto); the warm-up file in "
                  "assets.extra/ holds such requests.", ""]
    return "\n".join(lines)


# -- warm-up requests -------------------------------------------------------------------


def _rows(columns: dict, n: int, start: int = 0) -> dict:
    total = len(next(iter(columns.values())))
    idx = (np.arange(n) + start) % max(total, 1)
    return {k: np.asarray(v)[idx] for k, v in columns.items()}


def write_warmup_requests(path, columns: dict, signatures: dict, *, model_name: str,
                          batch_sizes=WARMUP_BATCH_SIZES) -> int:
    """Write ``assets.extra/tf_serving_warmup_requests``: PredictionLog records.

    ``serving_default`` gets one request per batch size in ``batch_sizes``; every other
    signature whose inputs are all columns of the data gets one batch-1 request. Rows
    are real rows of ``columns``. Returns the number of records written.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for sig, io in signatures.items():
            if not set(io["inputs"]) <= set(columns):
                continue
            sizes = batch_sizes if sig == DEFAULT_SIGNATURE else (1,)
            for i, b in enumerate(sizes):
                rows = _rows({k: columns[k] for k in io["inputs"]}, b, start=i)
                req = predict_pb2.PredictRequest(
                    model_spec=model_pb2.ModelSpec(name=model_name, signature_name=sig))
                for k, (dt, _) in io["inputs"].items():
                    req.inputs[k].CopyFrom(tf.make_tensor_proto(rows[k].astype(dt)))
                log = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=req))
                writer.write(log.SerializeToString())
                n += 1
    return n


def read_warmup_requests(path) -> list:
    """The ``PredictionLog`` records of a warm-up file (for tests and inspection)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    out = []
    for rec in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(rec)
        out.append(log)
    return out


def _serving_api_available() -> bool:
    try:
        import tensorflow_serving.apis.prediction_log_pb2  # noqa: F401
    except ImportError:
        return False
    return True


# -- models.config ----------------------------------------------------------------------


def models_config_text(models_dir) -> str:
    """A TF Serving ``--model_config_file`` listing every model directory of
    ``models_dir`` (a folder with at least one integer version)."""
    models_dir = Path(models_dir).absolute()
    names = sorted(p.name for p in models_dir.iterdir()
                   if p.is_dir() and not p.name.startswith(".") and existing_versions(p))
    try:
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError:
        body = "".join(f'  config {{\n    name: "{n}"\n    base_path: "{models_dir / n}"\n'
                       f'    model_platform: "tensorflow"\n  }}\n' for n in names)
        return "model_config_list {\n" + body + "}\n"
    cfg = model_server_config_pb2.ModelServerConfig()
    for n in names:
        m = cfg.model_config_list.config.add()
        m.name, m.base_path, m.model_platform = n, str(models_dir / n), "tensorflow"
    return text_format.MessageToString(cfg)


def write_models_config(models_dir) -> Path:
    """(Re)write ``models_dir/models.config`` atomically."""
    models_dir = Path(models_dir).absolute()
    path = models_dir / MODELS_CONFIG
    return write_text(path, models_config_text(models_dir))


# -- the export -------------------------------------------------------------------------


def export_model(model, schema, models_dir, *, name: str, version: int | None = None,
                 overwrite: bool = False, columns: dict | None = None, verify: bool = False,
                 verify_rows: int = 512, warmup: bool | str = "auto", source: dict | None = None,
                 endpoints: dict | None = None) -> ExportResult:
    """Export ``model`` as version ``version`` of ``name`` under ``models_dir``.

    Args:
      columns: held-out rows (numpy columns of a split) for the warm-up requests, the
        sample request in ``signature.txt`` and the parity check.
      version: default: one more than the highest existing version (1 for a new model).
      overwrite: replace an existing version; otherwise :class:`UsageError` (exit 2).
      verify: before the version is moved into place, run the clean-process parity
        check (:func:`tfdebias.export.verify.verify_in_clean_process`) on up to
        ``verify_rows`` rows of ``columns``, within
        :func:`~tfdebias.export.verify.tolerance` (1e-5; 1e-2 for a model computing in
        bfloat16); a mismatch leaves nothing behind.
      warmup: write the warm-up file (``True`` requires tensorflow-serving-api;
        ``"auto"`` writes it when that package is installed).
      source: provenance for ``signature.txt`` and ``assets.extra/tfdebias.json``.
      endpoints: extra signatures on top of the model's ``serving_endpoints``.
    """
    name = _check_name(name)
    models_dir = Path(models_dir).absolute()
    model_dir = models_dir / name
    if version is None:
        found = existing_versions(model_dir)
        version = (found[-1] + 1) if found else 1
    if not isinstance(version, int) or version < 0:
        raise UsageError(f"version must be a non-negative integer, got {version!r}")
    target = model_dir / str(version)
    if target.exists() and not overwrite:
        raise UsageError(f"{target} already exists; pick another --version or pass --overwrite")
    if (verify or warmup is True) and columns is None:
        raise UsageError("the parity check and the warm-up requests need held-out rows (columns)")
    if warmup is True and not _serving_api_available():
        raise UsageError("warm-up requests need tensorflow-serving-api: pip install 'tfdebias[serve]'")
    do_warmup = columns is not None and (warmup is True or (warmup == "auto" and _serving_api_available()))

    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale(model_dir)
    verified = None
    with staging_dir(target) as tmp:
        write_saved_model(model, schema, tmp, endpoints=endpoints)
        sigs = read_signatures(tmp)
        n_warm = 0
        inputs = None
        if columns is not None:
            inputs = {k: np.asarray(columns[k]).astype(dt) for k, (dt, _) in
                      sigs[DEFAULT_SIGNATURE]["inputs"].items() if k in columns}
            inputs.update({k: np.asarray(v) for k, v in columns.items() if k not in inputs})
        if do_warmup:
            n_warm = write_warmup_requests(tmp / "assets.extra" / WARMUP_FILE, inputs, sigs,
                                           model_name=name)
        meta = {"name": name, "version": version, "signatures": sorted(sigs),
                "schema": schema.to_dict(), **({"source": source} if source else {})}
        (tmp / "assets.extra").mkdir(exist_ok=True)
        (tmp / "assets.extra" / "tfdebias.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        sample = _rows(inputs, 1) if inputs is not None else None
        (tmp / SIGNATURE_FILE).write_text(signature_text(
            sigs, name=name, version=version, schema=schema,
            sample={k: v[0] for k, v in sample.items()} if sample else None, source=source))
        if verify:
            from tfdebias.export.verify import tolerance, verify_in_clean_process
            from tfdebias.models import predict

            feed = _rows({k: inputs[k] for k in sigs[DEFAULT_SIGNATURE]["inputs"]},
                         min(verify_rows, len(next(iter(inputs.values())))))
            expected = predict(model, feed)
            verified = verify_in_clean_process(tmp, feed, expected, atol=tolerance(model))
    cfg = write_models_config(models_dir)
    return ExportResult(target, name, version, cfg, n_warm, verified)


def held_out_columns(splits: dict, schema, config=None) -> dict:
    """Model-input columns of the held-out split: ``test`` if present, else the
    validation split (never the training split)."""
    from tfdebias.data import features_only

    valid = getattr(config, "valid_split", "valid")
    train = getattr(config, "train_split", "train")
    for s in ("test", valid):
        if s in splits and s != train:
            return features_only(splits[s], schema)
    raise UsageError(f"no held-out split among {sorted(splits)} for the warm-up and parity rows")


def read_head(data: str, config=None, *, rows: int = 1024, data_dir: str | None = None) -> dict:
    """The first ``rows`` rows of the held-out split (``test``, else the validation
    split) as ``{split: columns}``, without reading the whole split."""
    import tensorflow_datasets as tfds

    from tfdebias import data as tdata

    builder = tdata.get_builder(data, data_dir=data_dir)
    train = getattr(config, "train_split", "train")
    for s in ("test", getattr(config, "valid_split", "valid")):
        if s in builder.info.splits and s != train:
            ds = builder.as_dataset(split=f"{s}[:{rows}]", batch_size=-1)
            return {s: {k: np.asarray(v) for k, v in tfds.as_numpy(ds).items()}}
    raise UsageError(f"data set {data!r} has no held-out split among {sorted(builder.info.splits)}")


def export_run(run_dir, models_dir, *, name: str | None = None, version: int | None = None,
               overwrite: bool = False, verify: bool = False, data_dir: str | None = None,
               warmup: bool | str = "auto") -> ExportResult:
    """``tfdebias export``: rebuild a finished run's model and export it for TF Serving.

    ``name`` defaults to the run's model name (``config.model``).
    """
    from tfdebias import data as tdata
    from tfdebias.training.engine import load_run

    run_dir = Path(run_dir)
    model, config, schema = load_run(run_dir, data_dir=data_dir)
    columns = held_out_columns(read_head(config.data, config, data_dir=data_dir), schema, config)
    source = {"run_dir": str(run_dir.absolute()), "model": config.model, "data": config.data,
              "model_args": config.model_args, "seed": config.seed}
    return export_model(model, schema, models_dir, name=name or config.model.replace("/", "_"),
                        version=version, overwrite=overwrite, columns=columns, verify=verify,
                        warmup=warmup, source=source)
