"""Export for TF Serving: layout, signatures, warm-up requests, models.config, the
extra-endpoint hook, atomicity, and the clean-process parity check.

The first tests use a tiny schema and model in memory; the last ones go through the
real path (quickstart on the confounded_ctr simulator, then ``tfdebias export --verify``).
"""

import json
import os

import numpy as np
import pytest

from tfdebias.errors import UsageError
from tfdebias.schema import Feature, Schema

SCHEMA = Schema([
    Feature("user_id", "categorical", vocab_size=20),
    Feature("item_id", "categorical", vocab_size=30),
    Feature("price", "dense"),
    Feature("history", "sequence", vocab_size=30, max_len=3, vocab="item_id"),
    Feature("click", "label"),
    Feature("propensity", "exposure"),
])
INPUTS = ["history", "item_id", "price", "user_id"]


def _columns(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return {"user_id": rng.integers(1, 20, n), "item_id": rng.integers(1, 30, n),
            "price": rng.random(n).astype("float32"), "history": rng.integers(0, 30, (n, 3)),
            "click": rng.integers(0, 2, n).astype("float32"),
            "propensity": rng.random(n).astype("float32")}


@pytest.fixture(scope="module")
def model():
    import keras

    from tfdebias import models

    keras.utils.set_random_seed(0)
    m = models.build("deepfm", SCHEMA, embedding_dim=4, hidden_units=[8])
    m({k: v for k, v in _columns(4).items()})
    return m


def _feats(cols):
    return {k: cols[k] for k in INPUTS}


def test_layout_signature_warmup_and_models_config(model, tmp_path):
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from tfdebias.export import export_model, read_signatures, read_warmup_requests

    cols = _columns()
    res = export_model(model, SCHEMA, tmp_path / "models", name="ctr", columns=cols)
    v1 = tmp_path / "models" / "ctr" / "1"
    assert res.path == v1 and res.version == 1
    assert (v1 / "saved_model.pb").exists() and (v1 / "variables").is_dir()
    assert oct(v1.stat().st_mode & 0o777) != oct(0o700)  # readable by a serving user

    # Raw features by name, batch dimension None, dtypes from the schema; labels and
    # exposures are not inputs.
    sigs = read_signatures(v1)
    default = sigs["serving_default"]
    assert default["inputs"] == {"history": ("int64", (None, 3)), "item_id": ("int64", (None,)),
                                 "price": ("float32", (None,)), "user_id": ("int64", (None,))}
    assert default["outputs"] == {"prediction": ("float32", (None,))}
    text = (v1 / "signature.txt").read_text()
    for name in INPUTS + ["prediction", "curl", ":predict"]:
        assert name in text

    # Warm-up: PredictionLog records of real rows, batch sizes 1, 8 and 64.
    logs = read_warmup_requests(v1 / "assets.extra" / "tf_serving_warmup_requests")
    assert res.warmup_requests == len(logs) == 3
    sizes = []
    for log in logs:
        req = log.predict_log.request
        assert req.model_spec.name == "ctr" and req.model_spec.signature_name == "serving_default"
        assert sorted(req.inputs) == INPUTS
        users = tf.make_ndarray(req.inputs["user_id"])
        sizes.append(len(users))
        assert set(users) <= set(cols["user_id"])
        hist = tf.make_ndarray(req.inputs["history"])
        assert hist.dtype == np.int64 and hist.shape == (len(users), 3)
    assert sizes == [1, 8, 64]

    # models.config parses as TF Serving's ModelServerConfig and points at the model.
    cfg = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(res.models_config.read_text(), cfg)
    (entry,) = cfg.model_config_list.config
    assert entry.name == "ctr" and entry.base_path == str(tmp_path / "models" / "ctr")
    assert entry.model_platform == "tensorflow"

    # The served prediction is the Keras model's, in this process too.
    loaded = tf.saved_model.load(str(v1))
    out = loaded.signatures["serving_default"](**{k: tf.constant(cols[k]) for k in INPUTS})
    ref = np.asarray(model(_feats(cols), training=False))[:, 0]
    np.testing.assert_allclose(out["prediction"].numpy(), ref, atol=1e-6)


def test_versions_atomic_and_refused_unless_overwrite(model, tmp_path):
    from tfdebias.export import export_model, existing_versions

    models_dir = tmp_path / "m"
    export_model(model, SCHEMA, models_dir, name="ctr", version=1, columns=_columns(), warmup=False)
    with pytest.raises(UsageError, match="already exists"):
        export_model(model, SCHEMA, models_dir, name="ctr", version=1, warmup=False)
    before = (models_dir / "ctr" / "1" / "saved_model.pb").stat().st_mtime_ns
    export_model(model, SCHEMA, models_dir, name="ctr", version=1, overwrite=True, warmup=False)
    assert (models_dir / "ctr" / "1" / "saved_model.pb").stat().st_mtime_ns != before
    assert export_model(model, SCHEMA, models_dir, name="ctr", warmup=False).version == 2

    # An export that fails half-way leaves neither the version nor its temporary folder.
    def broken(features):
        raise RuntimeError("boom")

    with pytest.raises(Exception, match="boom"):
        export_model(model, SCHEMA, models_dir, name="ctr", version=3, warmup=False,
                     endpoints={"broken": (broken, [{}])})
    assert existing_versions(models_dir / "ctr") == [1, 2]
    assert sorted(p.name for p in (models_dir / "ctr").iterdir()) == ["1", "2"]

    # A killed export's temporary folder (its process is gone) is swept by the next one.
    stale = models_dir / "ctr" / ".4.tmp-999999999-abc"
    stale.mkdir()
    export_model(model, SCHEMA, models_dir, name="ctr", warmup=False)
    assert not stale.exists()
    with pytest.raises(UsageError, match="model name"):
        export_model(model, SCHEMA, models_dir, name="../x", warmup=False)


def test_models_declare_extra_serving_endpoints(tmp_path):
    """The hook: ``serving_endpoints(schema)`` -> name -> (fn, input_signature)."""
    import keras
    import tensorflow as tf

    from tfdebias.export import export_model, read_signatures, serving_specs

    class TwoTower(keras.Model):
        def __init__(self):
            super().__init__()
            self.users = keras.layers.Embedding(20, 4)
            self.items = keras.layers.Embedding(30, 4)

        def call(self, features, training=False):
            u, i = self.users(features["user_id"]), self.items(features["item_id"])
            return keras.ops.sigmoid(keras.ops.sum(u * i, axis=-1, keepdims=True))

        def serving_endpoints(self, schema):
            return {
                "user_tower": (lambda f: {"user_embedding": self.users(f["user_id"])},
                               [serving_specs(schema, ["user_id"])]),
                "item_tower": (lambda f: {"item_embedding": self.items(f["item_id"])},
                               [serving_specs(schema, ["item_id"])]),
            }

    m = TwoTower()
    cols = _columns()
    m(_feats(cols))
    res = export_model(m, SCHEMA, tmp_path, name="towers", columns=cols)
    sigs = read_signatures(res.path)
    assert set(sigs) == {"serving_default", "user_tower", "item_tower"}
    assert sigs["user_tower"]["inputs"] == {"user_id": ("int64", (None,))}
    assert sigs["item_tower"]["outputs"] == {"item_embedding": ("float32", (None, 4))}
    assert res.warmup_requests == 3 + 2  # the towers get one batch-1 request each
    loaded = tf.saved_model.load(str(res.path))
    emb = loaded.signatures["user_tower"](user_id=tf.constant([3, 5], tf.int64))["user_embedding"]
    np.testing.assert_allclose(emb.numpy(), np.asarray(m.users(np.array([3, 5]))), atol=1e-7)


# -- through the real engine: quickstart, then `tfdebias export RUN_DIR --verify` ----------


@pytest.fixture(scope="module")
def quickstart_run(data_dir, tmp_path_factory):
    from tfdebias import quickstart

    out = tmp_path_factory.mktemp("qs")
    res = quickstart.run(out=out, data_dir=data_dir, epochs=1, verbose=0, rows=quickstart.ROWS[:1])
    return out, res


def test_quickstart_ends_with_a_tf_serving_export(quickstart_run, capsys):
    out, res = quickstart_run
    export = res["export"]
    assert export.endswith(os.path.join("export", "deepfm", "1"))
    assert os.path.exists(os.path.join(export, "saved_model.pb"))
    assert os.path.exists(os.path.join(export, "assets.extra", "tf_serving_warmup_requests"))
    assert os.path.exists(os.path.join(os.path.dirname(os.path.dirname(export)), "models.config"))


@pytest.mark.slow
def test_cli_export_verify_and_refusal(quickstart_run, data_dir, tmp_path, capsys):
    from tfdebias.cli import main
    from tfdebias.export.verify import clean_sys_path

    out, res = quickstart_run
    run_dir = res["records"][0]["run_dir"]
    models = tmp_path / "models"
    # --verify: a `python -I -S` process whose sys.path has no tfdebias loads the
    # SavedModel and matches the Keras model within 1e-5 on held-out rows. It reports
    # whether `import tfdebias` failed there; the export is refused unless it did.
    paths, block = clean_sys_path()
    assert not any(os.path.isdir(os.path.join(p, "tfdebias")) for p in paths) or block
    assert main(["export", run_dir, "--out", str(models), "--name", "ctr", "--verify"]) == 0
    printed = capsys.readouterr().out
    line = next(ln for ln in printed.splitlines() if "verified in a clean process" in ln)
    assert "tfdebias not importable" in line and "on 512 rows" in line
    assert float(line.split("max |diff| = ")[1].split()[0]) <= 1e-5
    meta = json.loads((models / "ctr" / "1" / "assets.extra" / "tfdebias.json").read_text())
    assert meta["source"]["model"] == "deepfm" and meta["signatures"] == ["serving_default"]
    # the same version again: exit 2, one line, nothing changed
    assert main(["export", run_dir, "--out", str(models), "--name", "ctr", "--version", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in (models / "ctr").iterdir()) == ["1"]
