"""Training precision (tfdebias.precision): float32 by default, mixed_bfloat16 on request."""

import json

import keras
import numpy as np
import pytest

from tfdebias import models
from tfdebias.cli import main
from tfdebias.errors import UsageError
from tfdebias.precision import PRECISIONS, check, policy_scope
from tfdebias.schema import Feature, Schema
from tfdebias.training import TrainConfig, build_model, evaluate_run, load_run, train

SCHEMA = Schema([Feature("user_id", "categorical", vocab_size=20),
                 Feature("item_id", "categorical", vocab_size=30),
                 Feature("price", "dense"),
                 Feature("click", "label")])
FEATURES = {"user_id": np.array([1, 2, 3]), "item_id": np.array([4, 5, 29]),
            "price": np.array([0.1, 0.5, 0.9], "float32")}


def _compute_dtypes(model):
    return {layer.compute_dtype for layer in model._flatten_layers(include_self=False)
            if layer.weights}


def test_policy_scope_restores_the_global_policy_also_on_error():
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(RuntimeError):
        with policy_scope("mixed_bfloat16"):
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
            raise RuntimeError("inside")
    assert keras.config.dtype_policy().name == "float32"


def test_check_names_the_choices():
    assert [check(p) for p in PRECISIONS] == list(PRECISIONS)
    with pytest.raises(UsageError, match=r"precision must be one of \['float32', 'mixed_bfloat16'\]"):
        TrainConfig(precision="float16")


def test_build_model_in_mixed_bfloat16_computes_in_bfloat16_and_keeps_float32_variables():
    model = build_model("deepfm", SCHEMA, {"embedding_dim": 4, "hidden_units": [8]}, FEATURES,
                        precision="mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # restored
    assert _compute_dtypes(model) == {"bfloat16"}, _compute_dtypes(model)
    assert {v.dtype for v in model.weights} == {"float32"}
    assert model.dnn.stack[0](np.zeros((2, 9), "float32")).dtype == "bfloat16"
    out = model(FEATURES)
    assert out.dtype == "float32" and out.shape == (3, 1)
    # the float32 model with the same weights gives the same scores up to bfloat16 rounding
    plain = build_model("deepfm", SCHEMA, {"embedding_dim": 4, "hidden_units": [8]}, FEATURES)
    assert _compute_dtypes(plain) == {"float32"}
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(plain(FEATURES).numpy(), out.numpy(), atol=0.02)
    assert not np.array_equal(plain(FEATURES).numpy(), out.numpy())


def test_from_config_rebuilds_the_sub_layers_under_the_saved_policy():
    model = build_model("dcn", SCHEMA, {"embedding_dim": 4}, FEATURES, precision="mixed_bfloat16")
    again = models.get("dcn").from_config(model.get_config())
    again(FEATURES)
    assert _compute_dtypes(again) == {"bfloat16"}
    again.set_weights(model.get_weights())
    np.testing.assert_array_equal(again(FEATURES).numpy(), model(FEATURES).numpy())
    assert keras.config.dtype_policy().name == "float32"


def test_models_with_their_own_loss_are_float32_only():
    with pytest.raises(UsageError, match="'cp2rec' computes its own loss .* deepfm"):
        build_model("cp2rec", SCHEMA, {}, FEATURES, precision="mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow
def test_train_and_evaluate_a_mixed_bfloat16_run(data_dir, tmp_path):
    cfg = TrainConfig(data="confounded_ctr", model="deepfm", epochs=1, patience=0,
                      model_args={"embedding_dim": 4}, precision="mixed_bfloat16")
    result = train(cfg, tmp_path / "bf16", data_dir=data_dir, verbose=0, plots=False)
    assert json.loads((result.run_dir / "config.json").read_text())["precision"] == "mixed_bfloat16"
    assert 0.55 < result.metrics["valid/auc"] < 1.0
    model, config, _ = load_run(result.run_dir, data_dir=data_dir)
    assert config.precision == "mixed_bfloat16" and _compute_dtypes(model) == {"bfloat16"}
    again = evaluate_run(result.run_dir, data_dir=data_dir)
    for k in ("valid/auc", "test/auc", "test/logloss"):
        assert abs(again[k] - result.metrics[k]) < 1e-6, k
    assert keras.config.dtype_policy().name == "float32"
    # served: the SavedModel is checked against Keras at the bfloat16 tolerance
    from tfdebias.export.serving import export_run

    exported = export_run(result.run_dir, tmp_path / "models", verify=True, warmup=False,
                          data_dir=data_dir)
    assert exported.verified["atol"] == 1e-2 and exported.verified["max_abs_diff"] <= 1e-2


def test_cli_precision_errors_exit_2_and_leave_nothing(tmp_path, data_dir, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "confounded_ctr", "--model", "deepfm", "--precision", "float16"])
    assert e.value.code == 2
    assert "invalid choice: 'float16'" in capsys.readouterr().err
    out = tmp_path / "r"
    assert main(["train", "--data", "confounded_ctr", "--model", "cp2rec", "--out", str(out),
                 "--precision", "mixed_bfloat16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tfdebias: error: model 'cp2rec' computes its own loss"), err[-3:]
    assert not list(tmp_path.iterdir())


CROSS_DOMAIN = {"conet", "csn", "din", "minet", "mlp_plus_plus", "mv_dnn"}


@pytest.mark.parametrize("name", ["conet", "csn", "dcn", "deepfm", "din", "dssm", "fm", "lr",
                                  "minet", "mlp", "mlp_plus_plus", "mv_dnn", "ncf", "nfm",
                                  "wide_deep", "xdeepfm"])
@pytest.mark.slow
def test_every_engine_loss_model_trains_in_mixed_bfloat16(name, data_dir):
    from tfdebias import data as tdata
    from tfdebias.optimizers import make_optimizer
    from tfdebias.training import compile_model
    from tfdebias.training.engine import uses_custom_loss

    assert not uses_custom_loss(models.get(name))  # the list above is the engine-loss models
    splits, schema = tdata.load("cross_domain_ctr" if name in CROSS_DOMAIN else "confounded_ctr",
                                data_dir=data_dir)
    features, labels = next(iter(tdata.make_dataset(splits["train"], schema, batch_size=256)))
    model = build_model(name, schema, {}, features, precision="mixed_bfloat16")
    compile_model(model, make_optimizer("lazy_adam", 1e-3))
    before = [v.numpy() for v in model.trainable_variables]
    loss = model.train_on_batch(features, labels)
    loss = loss[0] if isinstance(loss, list) else loss
    assert np.isfinite(loss)
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
    assert "bfloat16" in _compute_dtypes(model)


def test_the_engine_loss_list_is_complete():
    import tfdebias.methods  # noqa: F401
    from tfdebias.training.engine import uses_custom_loss

    plain = {n for n in models.available() if not uses_custom_loss(models.get(n))}
    marks = test_every_engine_loss_model_trains_in_mixed_bfloat16.pytestmark
    tested = set(next(m for m in marks if m.name == "parametrize").args[1])
    assert plain == tested
