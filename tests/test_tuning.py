"""Hyper-parameter search: spaces as data, every backbone's space builds its model, the
search resumes where it stopped, and the best trial is a run that evaluate/export take."""

import json

import numpy as np
import pytest

from tfdebias.errors import UsageError
from tfdebias.schema import Feature, Schema
from tfdebias.tuning import spaces as sp


def test_space_specs_become_keras_tuner_hyperparameters():
    import keras_tuner as kt

    space = {
        "learning_rate": {"min": 1e-4, "max": 1e-2, "log": True, "step": 10},
        "hidden_units": [[64, 32], [128]],
        "dropout": {"choices": [0.0, 0.5], "default": 0.5},
        "num_cross_layers": {"min": 1, "max": 4},
        "temperature": 5.0,
    }
    hp = kt.HyperParameters()
    values = sp.declare(hp, space)
    by_name = {h.name: h for h in hp.space}
    # log scale with a factor step: the powers of ten
    assert list(by_name["learning_rate"].values) == pytest.approx([1e-4, 1e-3, 1e-2])
    assert by_name["learning_rate"].sampling == "log"
    # list-valued choices travel as JSON and come back as lists
    assert values["hidden_units"] == [64, 32] and by_name["hidden_units"].values == ["[64, 32]", "[128]"]
    assert values["dropout"] == 0.5
    assert type(by_name["num_cross_layers"]).__name__ == "Int"
    assert type(by_name["temperature"]).__name__ == "Fixed"
    cfg, args = sp.split_values({**values, "batch_size": 512, "tuner/epochs": 3})
    assert cfg == {"learning_rate": values["learning_rate"], "batch_size": 512}
    assert set(args) == {"hidden_units", "dropout", "num_cross_layers", "temperature"}


def test_register_space_validates_and_methods_can_register():
    with pytest.raises(UsageError, match="min < max"):
        sp.register_space("bad", {"lr": {"min": 1.0, "max": 0.1}})
    with pytest.raises(UsageError, match="log-scale"):
        sp.register_space("bad", {"lr": {"min": 0.0, "max": 1.0, "log": True}})
    with pytest.raises(UsageError, match="unknown spec keys"):
        sp.register_space("bad", {"lr": {"min": 0.1, "max": 1.0, "logscale": True}})
    assert "bad" not in sp.SEARCH_SPACES
    sp.register_space("my_method", {**sp.BACKBONE_COMMON, "lambda_c": {"min": 1e-3, "max": 1.0, "log": True}})
    try:
        assert sp.get_space("my-method")["lambda_c"]["log"] is True
        with pytest.raises(UsageError, match="continuous range 'lambda_c'"):
            sp.check_grid(sp.get_space("my_method"))
    finally:
        sp.SEARCH_SPACES.pop("my_method")
    with pytest.raises(UsageError, match="no search space"):
        sp.get_space("no_such_method")


def test_every_registered_space_declares():
    """Spaces the method modules register (cp2rec, dadin, damcar, amid, ...) are valid."""
    import keras_tuner as kt

    import tfdebias.methods  # noqa: F401  (method modules register their spaces)

    assert {"deepfm", "dcn", "ncf"} <= set(sp.available())
    for name in sp.available():
        hp = kt.HyperParameters()
        values = sp.declare(hp, sp.get_space(name))
        assert set(values) == set(sp.get_space(name)), name
        assert len(hp.space) == len(values), name


SCHEMA = Schema([Feature("user_id", "categorical", vocab_size=9),
                 Feature("item_id", "categorical", vocab_size=7),
                 Feature("price", "dense"), Feature("click", "label")])


@pytest.mark.parametrize("name", ["lr", "fm", "deepfm", "mlp", "wide_deep", "ncf", "dcn", "dssm"])
def test_every_backbone_space_builds_its_model(name):
    """Defaults and a random point of each space are valid constructor arguments."""
    import keras_tuner as kt

    from tfdebias import models
    from tfdebias.tuning.search import trial_config
    from tfdebias.training import TrainConfig

    feats = {"user_id": np.array([1, 2]), "item_id": np.array([3, 4]),
             "price": np.array([0.5, 1.0], np.float32)}
    hp = kt.HyperParameters()
    sp.declare(hp, sp.get_space(name))
    rng_values = {h.name: sp.decode(h.random_sample(7)) for h in hp.space}
    for values in (sp.declare(kt.HyperParameters(), sp.get_space(name)), rng_values):
        cfg = trial_config(TrainConfig(model=name), values)
        model = models.build(name, SCHEMA, **cfg.model_args)
        assert model(feats).shape == (2, 1)
        assert cfg.learning_rate == values["learning_rate"]


def test_tuner_writes_are_atomic(tmp_path):
    from keras_tuner.src import utils as kt_utils

    from tfdebias.tuning.search import atomic_tuner_writes

    path = tmp_path / "oracle.json"
    path.write_text('{"ok": 1}')
    with atomic_tuner_writes():
        with pytest.raises(TypeError):
            kt_utils.save_json(str(path), {"bad": object()})  # fails before any byte is written
        assert json.loads(path.read_text()) == {"ok": 1}
        kt_utils.save_json(str(path), {"ok": 2})
    assert json.loads(path.read_text()) == {"ok": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["oracle.json"]


# -- a real search on the confounded_ctr simulator ------------------------------------------

TINY = {"learning_rate": [3e-3, 1e-2, 3e-2], "batch_size": [2048, 4096],
        "embedding_dim": [4, 8], "hidden_units": [[16]]}


@pytest.mark.slow
def test_search_resumes_and_best_trial_is_a_run(data_dir, tmp_path, capsys):
    from keras_tuner.src.engine import trial as trial_module

    from tfdebias.export import export_run
    from tfdebias.training import TrainConfig, evaluate_run, read_json
    from tfdebias.tuning import tune

    base = TrainConfig(data="confounded_ctr", model="deepfm", epochs=2, patience=5)
    d = tmp_path / "search"
    first = tune("deepfm", base, d, tuner="random", max_trials=2, space=TINY, data_dir=data_dir)
    assert first.trials_completed == 2 and first.trials_run_now == 2
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in progress] == ["[1/2", "[2/2"]
    assert "val_auc 0." in progress[0] and "(best 0." in progress[1]
    trial_files = {p: p.read_text() for p in (d / "search").glob("trial_*/trial.json")}
    assert len(trial_files) == 2

    # The same command with --max-trials 3 keeps both trials and runs exactly one more.
    again = tune("deepfm", base, d, tuner="random", max_trials=3, space=TINY, data_dir=data_dir)
    assert again.trials_completed == 3 and again.trials_run_now == 1
    # the resumed search counts the two trials it found as done
    assert [line.split("]")[0] for line in capsys.readouterr().err.splitlines()
            if line.startswith("[")] == ["[3/3"]
    assert all(p.read_text() == text for p, text in trial_files.items())
    oracle = read_json(d / "search" / "oracle.json")
    assert len(oracle["end_order"]) == 3
    # ... and once complete, a rerun trains nothing.
    assert tune("deepfm", base, d, tuner="random", max_trials=3, space=TINY,
                data_dir=data_dir).trials_run_now == 0
    # Another tuner (or space, or data) in the same folder is refused.
    with pytest.raises(UsageError, match="other settings"):
        tune("deepfm", base, d, tuner="bayesian", max_trials=3, space=TINY, data_dir=data_dir)

    # The best trial is a normal run directory.
    best = again.run_dir
    cfg = read_json(best / "config.json")
    assert cfg["learning_rate"] == again.best_values["learning_rate"]
    assert cfg["batch_size"] == again.best_values["batch_size"]
    assert cfg["model_args"]["embedding_dim"] == again.best_values["embedding_dim"]
    assert cfg["model_args"]["hidden_units"] == [16]
    history = (best / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and len(history) == 1 + 2
    assert again.metrics["valid/auc"] == pytest.approx(again.best_score, abs=2e-3)
    assert evaluate_run(best, data_dir=data_dir)["valid/auc"] == pytest.approx(
        again.metrics["valid/auc"], abs=1e-9)
    exported = export_run(best, tmp_path / "models", data_dir=data_dir, warmup=False)
    assert (exported.path / "saved_model.pb").exists()
    completed = [t for t in read_json(best / "tuning.json")["trials"]
                 if t["status"] == trial_module.TrialStatus.COMPLETED]
    assert len(completed) == 3


@pytest.mark.slow
def test_bayesian_and_hyperband_run_and_grid_enumerates(data_dir, tmp_path):
    from tfdebias.training import TrainConfig
    from tfdebias.tuning import tune
    from tfdebias.tuning.search import make_hypermodel, make_tuner

    base = TrainConfig(data="confounded_ctr", model="deepfm", epochs=1, patience=5)
    space = {**TINY, "learning_rate": {"min": 1e-3, "max": 1e-2, "log": True, "step": 10}}
    for kind in ("bayesian", "hyperband"):  # hyperband passes epochs/initial_epoch to fit
        res = tune("deepfm", base, tmp_path / kind, tuner=kind, max_trials=1, space=space,
                   data_dir=data_dir)
        assert res.trials_completed == 1 and (res.run_dir / "model.weights.h5").exists()
    grid = make_tuner("grid", make_hypermodel(space, base, {}, SCHEMA), base, tmp_path / "grid",
                      max_trials=24, space=space)
    assert type(grid.oracle).__name__ == "GridSearchOracle"
    with pytest.raises(UsageError, match="continuous range"):
        make_tuner("grid", make_hypermodel(space, base, {}, SCHEMA), base, tmp_path / "grid2",
                   max_trials=2, space={"learning_rate": {"min": 1e-3, "max": 1e-2, "log": True}})


def test_a_model_the_engine_cannot_fit_is_refused_before_any_work(tmp_path):
    """DAMCAR's label generator trains on paired source/target batches in its own staged
    loop; keras-tuner over one model cannot search it, and says so before writing."""
    from tfdebias.training import TrainConfig
    from tfdebias.tuning.search import tune

    base = TrainConfig(data="cascade_exposure", model="damcar_label_generator", epochs=1)
    with pytest.raises(UsageError, match="cannot be trained by `tfdebias train`"):
        tune("damcar_label_generator", base, tmp_path / "search", max_trials=1)
    assert not (tmp_path / "search").exists()


def test_a_choice_mixing_types_round_trips():
    """keras-tuner holds one value type per Choice; a grid like DADIN's threshold
    (a rule name or a number) is stored tagged and read back as written."""
    import keras_tuner as kt

    space = {"threshold": ["domain_median", 0.2, 0.5], "units": [[64], [32, 16]],
             "t2": {"choices": ["a", 1], "default": 1}}
    hp = kt.HyperParameters()
    values = sp.declare(hp, space)
    assert values == {"threshold": "domain_median", "units": [64], "t2": 1}
    stored = hp.get_config()["space"]
    choices = {s["config"]["name"]: s["config"]["values"] for s in stored}
    assert [sp.decode(v) for v in choices["threshold"]] == ["domain_median", 0.2, 0.5]
