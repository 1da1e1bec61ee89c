"""Training DADIN and its baselines for the evidence table: the fixed step budgets
(:data:`BUDGETS`), one row's settings (:func:`row_config`), paired initial weights of the
ablations (:func:`share_initial_weights`, :func:`build_row_model`) and exactly-``steps``
training (:func:`train_row`)."""

from __future__ import annotations

from tfdebias.methods.dadin.model import VARIANTS

#: Budgets: a fixed number of optimizer steps, the same for every row; no early stopping.
#: ``paper`` = Sec. 4.3.1 / Table 2 (Adam, embedding 64; single-domain batch 1000, lr 1e-3,
#: hidden [512, 512, 512]; cross-domain and DADIN batch 2000, lr 1e-4, hidden
#: [512, 128, 64]; the paper early-stops within 60 epochs, we fix 3,000 steps, about 23
#: epochs of ``cross_domain_ctr/medium`` at batch 2000). ``quick`` shrinks everything so
#: that three data seeds fit in minutes on 2 CPU cores (one batch size for every row, so
#: every row also sees the same number of examples). See docs/methods/dadin.md.
BUDGETS = {
    "paper": {"embedding_dim": 64, "steps": 3000,
              "single": {"batch_size": 1000, "learning_rate": 1e-3, "hidden_units": [512, 512, 512]},
              "cross": {"batch_size": 2000, "learning_rate": 1e-4, "hidden_units": [512, 128, 64]}},
    "quick": {"embedding_dim": 16, "steps": 600,
              "single": {"batch_size": 512, "learning_rate": 1e-3, "hidden_units": [128, 128]},
              "cross": {"batch_size": 512, "learning_rate": 1e-3, "hidden_units": [128, 64]}},
}
_NO_HIDDEN = ("lr", "fm")
#: DADIN's sub-layers, in the order ``share_initial_weights`` copies them
_DADIN_LAYERS = ("embed", "target_attention", "source_attention", "interest_attention",
                 "bi_pooling", "dnn_layers", "domain_agnostic_layer", "predictor_hidden",
                 "predictor_out", "domain_classifier", "domain_classifier_1",
                 "domain_classifier_0")


def row_config(model: str, args: dict, group: str, budget: dict, overrides: dict) -> tuple[dict, dict]:
    """``(train settings, model args)`` of one row under ``budget`` and the CLI overrides."""
    part = budget["single" if group == "single" else "cross"]
    train = {"batch_size": part["batch_size"], "learning_rate": part["learning_rate"],
             "optimizer": "adam"}
    model_args = {"embedding_dim": budget["embedding_dim"], **args}
    if model not in _NO_HIDDEN:
        model_args["hidden_units"] = list(part["hidden_units"])
    if overrides.get("embedding_dim") is not None:
        model_args["embedding_dim"] = overrides["embedding_dim"]
    return train, model_args


def share_initial_weights(model, reference) -> list[str]:
    """Copy into DADIN ``model`` the weights of every sub-layer it shares with
    ``reference`` (same layer, same weight shapes), and the seed state of their dropout
    layers; returns the layers copied.

    Pairs the ablations: built under one seed, DADIN9 and DADIN++ start from identical
    embeddings, attention, DNN, domain-agnostic layer and label predictor and draw the
    same dropout masks (Keras would otherwise draw the layers built after the first
    removed one differently)."""
    copied = []
    for attr in _DADIN_LAYERS + ("predictor_dropout",):
        a, b = getattr(model, attr, None), getattr(reference, attr, None)
        if a is None or b is None:
            continue
        wa, wb = a.weights, b.weights
        if len(wa) != len(wb) or any(tuple(x.shape) != tuple(y.shape) for x, y in zip(wa, wb)):
            continue
        for x, y in zip(wa, wb):
            x.assign(y)
        seeds_a, seeds_b = _seed_states(a), _seed_states(b)
        if len(seeds_a) == len(seeds_b):
            for x, y in zip(seeds_a, seeds_b):
                x.assign(y)
        copied.append(attr)
    return copied


def _seed_states(layer) -> list:
    """The seed-generator states of ``layer`` and its sub-layers (dropout), in order."""
    return [lay.seed_generator.state for lay in layer._flatten_layers()
            if getattr(lay, "seed_generator", None) is not None]


def _stop_at_step(steps: int):
    import keras

    class StopAtStep(keras.callbacks.Callback):
        """Ends ``fit`` after exactly ``steps`` optimizer steps (checked after every step)."""

        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) >= steps:
                self.model.stop_training = True

    return StopAtStep()


def build_row_model(model: str, model_args: dict, schema, sample: dict, seed: int):
    """The row's model built under ``seed``; DADIN variants take the initial weights of
    the full DADIN++ built under the same seed wherever they share its layers
    (:func:`share_initial_weights`)."""
    import keras

    from tfdebias.training.engine import build_model

    keras.utils.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    if model != "dadin":
        return build_model(model, schema, model_args, sample)
    if all(model_args.get(k, True) for k in _switch_names()):
        return build_model("dadin", schema, model_args, sample)  # it is the reference
    full = {k: v for k, v in model_args.items() if k not in _switch_names()}
    reference = build_model("dadin", schema, full, sample)
    obj = build_model("dadin", schema, model_args, sample)
    share_initial_weights(obj, reference)
    del reference
    return obj


def _switch_names() -> set:
    return {k for v in VARIANTS.values() for k in v}


def train_row(model: str, model_args: dict, train: dict, schema, train_cfg: dict, steps: int,
              seed: int, sample: dict | None = None):
    """Train one row for exactly ``steps`` optimizer steps (no validation, no early
    stopping); returns the model."""
    import math

    from tfdebias import data as tdata
    from tfdebias.optimizers import make_optimizer
    from tfdebias.training.engine import TrainConfig, compile_model, fit

    n = len(train[schema.label.name])
    batch = train_cfg["batch_size"]
    config = TrainConfig(data="", model=model, model_args=model_args, seed=seed,
                         epochs=max(1, math.ceil(steps / max(1, math.ceil(n / batch)))),
                         patience=0, protocol="cross_domain", **train_cfg)
    train_ds = tdata.make_dataset(train, schema, batch_size=batch, shuffle=True, seed=seed)
    if sample is None:
        sample = next(iter(tdata.make_dataset(train, schema, batch_size=8)))[0]
    obj = build_row_model(model, model_args, schema, sample, seed)
    compile_model(obj, make_optimizer(config.optimizer, config.learning_rate))
    if hasattr(obj, "set_run_length"):  # DADIN's GRL ramp spans exactly this run
        obj.set_run_length(steps)
    fit(obj, train_ds, None, config, verbose=0, callbacks=[_stop_at_step(steps)])
    done = int(obj.optimizer.iterations.numpy())
    if done != steps:  # pragma: no cover - a guard on the budget's one promise
        raise RuntimeError(f"{model}: trained {done} optimizer steps, the budget is {steps}")
    return obj
