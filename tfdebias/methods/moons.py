"""DADIN's toy check (the DADIN paper, Sec. 4.1, Fig. 4-6): inter-twinning moons, target
domain rotated by 35 degrees.

* Data (:func:`rotated_moons`): 300 source and 300 target points; the target is the
  source distribution rotated 35 degrees about its centre. Labels are the moon.
* Models (:class:`DADINToy`): a three-layer DNN gives ``h_spec``; the domain agnostic
  layer, the label predictor and the three domain classifiers (global and
  intra-class, behind a gradient reversal layer) are DADIN's (Sec. 3.3), and the loss
  is DADIN's own :func:`~tfdebias.methods.dadin.dadin_loss_terms`. The "DNN" of the
  paper has the *same* structure and parameter count with the adversarial losses off
  (``lambda_global = lambda_intra = 0``). The paper calls its toy backbone a
  "two-tower three-layers DNN" without saying what the towers are; we read it as the
  feature tower plus the prediction/discrimination tower.
* Experiment 1 (Fig. 4): train on all 300 source points and ``k`` labelled target points
  (``k`` in :data:`TARGET_LABELS` = 0, 2, 5, 10: with 150 target labels, the setting of
  the first version, both models solve the target; the paper's claim, a more accurate
  boundary on the target, can only show where target labels are scarce); every target
  point's *domain* is read (unlabelled target data, as in DANN). The ``k`` labelled
  points of a seed are the first ``k`` of one random order, so smaller sets are nested
  in larger ones. Scored on all 300 target points.
* Experiment 3 (Fig. 6): train DADIN-toy on all points; PCA of ``h_spec`` and ``h_DA``
  coloured by domain and class. We also report how well a linear probe tells the
  domains apart from each (``probe_auc``; 0.5 = no domain information).

``tfdebias reproduce dadin-toy --out DIR`` writes ``results.{json,md,png}`` and the
figure ``moons.png``.
"""

from __future__ import annotations

import functools

import numpy as np

from tfdebias.commands import positive_int

#: rotation of the target domain (degrees), the paper's 35
ROTATION = 35.0
#: labelled target points of Experiment 1
TARGET_LABELS = (0, 2, 5, 10)


def rotated_moons(n_source: int = 300, n_target: int = 300, *, angle: float = ROTATION,
                  noise: float = 0.1, seed: int = 0) -> dict:
    """Two-moons source data and a rotated target: ``{"x" (n, 2), "y" (n,), "domain" (n,)}``
    (source rows first; domain 0 = source, 1 = target)."""
    rng = np.random.default_rng(seed)

    def moons(n):
        n0 = n // 2
        t0 = rng.uniform(0, np.pi, n0)
        t1 = rng.uniform(0, np.pi, n - n0)
        upper = np.stack([np.cos(t0), np.sin(t0)], 1)
        lower = np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)
        x = np.concatenate([upper, lower]) + noise * rng.standard_normal((n, 2))
        y = np.concatenate([np.zeros(n0), np.ones(n - n0)])
        return x, y

    xs, ys = moons(n_source)
    xt, yt = moons(n_target)
    centre = np.array([0.5, 0.25])
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    xt = (xt - centre) @ rot.T + centre
    return {"x": np.concatenate([xs, xt]).astype("float32"),
            "y": np.concatenate([ys, yt]).astype("float32"),
            "domain": np.concatenate([np.zeros(n_source), np.ones(n_target)]).astype("int64")}


@functools.lru_cache(maxsize=None)
def _toy_model_class():
    import keras
    import tensorflow as tf
    from keras import ops

    from tfdebias.layers.gradient_reversal import GradientReversal
    from tfdebias.layers.mlp import MLP
    from tfdebias.methods.dadin import dadin_loss_terms, grl_schedule

    @keras.saving.register_keras_serializable(package="tfdebias")
    class DADINToy(keras.Model):
        """DADIN-toy (Sec. 4.1): DNN -> h_spec, domain agnostic layer, label predictor,
        global and intra-class domain classifiers behind a GRL. ``adversarial=False``
        keeps every layer (same parameter count) and drops the domain losses."""

        def __init__(self, hidden_units=(32, 32, 8), adversarial=True, lambda_global=1.0,
                     lambda_intra=1.0, alpha=0.5, threshold=0.5, grl_warmup_steps=0, **kwargs):
            super().__init__(**kwargs)
            self.adversarial = bool(adversarial)
            self.loss_args = dict(
                lambda_global=float(lambda_global) if adversarial else 0.0,
                lambda_intra=float(lambda_intra) if adversarial else 0.0,
                alpha=float(alpha), threshold=float(threshold))
            self.grl_warmup_steps = int(grl_warmup_steps)
            self.extractor = MLP(hidden_units, "relu", name="dnn")
            self.domain_agnostic = keras.layers.Dense(hidden_units[-1], activation="sigmoid",
                                                      name="domain_agnostic")
            self.predictor_hidden = keras.layers.Dense(16, name="label_predictor_1")
            self.predictor_out = keras.layers.Dense(1, name="label_predictor_2")
            self.grl = GradientReversal(1.0)
            self.domain_classifier = keras.layers.Dense(1, name="domain_classifier")
            self.domain_classifier_1 = keras.layers.Dense(1, name="domain_classifier_1")
            self.domain_classifier_0 = keras.layers.Dense(1, name="domain_classifier_0")
            self.tracker = keras.metrics.Mean(name="loss")

        def build(self, input_shape=None):
            self.built = True

        def forward_all(self, x, training=False):
            h_spec = self.extractor(x, training=training)
            h_da = self.domain_agnostic(h_spec)
            h = h_spec + h_da
            logits = ops.reshape(self.predictor_out(self.predictor_hidden(h)), (-1,))
            yh = ops.sigmoid(logits)[:, None]
            return {"logits": logits, "h_spec": h_spec, "h_da": h_da,
                    "d_global": ops.reshape(self.domain_classifier(self.grl(h_da)), (-1,)),
                    "d_intra1": ops.reshape(self.domain_classifier_1(self.grl(yh * h_da)), (-1,)),
                    "d_intra0": ops.reshape(self.domain_classifier_0(self.grl((1 - yh) * h_da)), (-1,))}

        def call(self, inputs, training=False):
            x = inputs["x"] if isinstance(inputs, dict) else inputs
            return ops.sigmoid(self.forward_all(x, training)["logits"])[:, None]

        def loss_terms(self, inputs, labels, outputs=None, sample_weight=None):
            out = outputs if outputs is not None else self.forward_all(inputs["x"], training=True)
            return dadin_loss_terms(labels, out["logits"], inputs["domain"], out["d_global"],
                                    out["d_intra1"], out["d_intra0"],
                                    sample_weight=sample_weight, **self.loss_args)

        @property
        def metrics(self):
            return [self.tracker]

        def train_step(self, data):
            x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
            if self.grl_warmup_steps > 0:
                self.grl._scale.assign(grl_schedule(self.optimizer.iterations, self.grl_warmup_steps))
            with tf.GradientTape() as tape:
                out = self.forward_all(x["x"], training=True)
                loss = self.loss_terms(x, y, out, sample_weight=sw)["loss"]
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            self.tracker.update_state(loss)
            return {"loss": self.tracker.result()}

    return DADINToy


def train_toy(data: dict, weight: np.ndarray, *, adversarial: bool, seed: int, steps: int = 600,
              learning_rate: float = 0.01):
    """Fit DADIN-toy (or the plain DNN) full-batch on the rows with ``weight > 0``
    (labels of weight-0 rows are never read; their domain labels are, as in DANN)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    model = _toy_model_class()(adversarial=adversarial, grl_warmup_steps=steps)
    feats = {"x": data["x"], "domain": data["domain"]}
    model(feats)  # build every layer before the optimizer
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    ds = tf.data.Dataset.from_tensors((feats, data["y"], weight.astype("float32"))).repeat()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return model


def linear_probe_auc(h: np.ndarray, domain: np.ndarray) -> float:
    """AUC of a least-squares linear classifier of the domain from ``h`` (in-sample)."""
    from tfdebias.evaluation import metrics as m

    z = (h - h.mean(0)) / (h.std(0) + 1e-8)
    z = np.concatenate([z, np.ones((len(z), 1))], 1)
    w, *_ = np.linalg.lstsq(z, domain.astype(float) * 2 - 1, rcond=None)
    auc = m.auc(domain, z @ w)
    return float(max(auc, 1 - auc))


def _pca2(h: np.ndarray) -> np.ndarray:
    z = h - h.mean(0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    return z @ vt[:2].T


def run_toy(seed: int, steps: int, target_labels=TARGET_LABELS) -> tuple[list[dict], dict]:
    """Experiments 1 (for each number of labelled target points) and 3 for one seed:
    records and what the figure needs (the boundaries of the smallest ``k``)."""
    from tfdebias.evaluation import metrics as m

    data = rotated_moons(seed=seed)
    n_s = int((data["domain"] == 0).sum())
    rng = np.random.default_rng(seed + 1000)
    tgt = np.flatnonzero(data["domain"] == 1)
    order = rng.permutation(tgt)  # the first k are labelled: nested sets
    records, fig = [], {"data": data, "models": {}, "k": min(target_labels)}
    for k in target_labels:
        weight = np.zeros(len(data["y"]))
        weight[:n_s] = 1.0
        weight[order[:k]] = 1.0
        for name, adv in (("DADIN-toy", True), ("DNN", False)):
            model = train_toy(data, weight, adversarial=adv, seed=seed, steps=steps)
            p = np.asarray(model({"x": data["x"][tgt]}))[:, 0]
            y = data["y"][tgt]
            out = model.forward_all(data["x"])
            records.append({"name": f"{name}, {k} target labels", "seed": seed, "metrics": {
                "target/accuracy": float(((p >= 0.5) == (y > 0.5)).mean()),
                "target/auc": float(m.auc(y, p)),
                "probe_auc/h_spec": linear_probe_auc(np.asarray(out["h_spec"]), data["domain"]),
                "probe_auc/h_da": linear_probe_auc(np.asarray(out["h_da"]), data["domain"]),
            }})
            if k == fig["k"]:
                fig["models"][name] = model
    # Experiment 3: DADIN-toy on every point of both domains
    full = train_toy(data, np.ones(len(data["y"])), adversarial=True, seed=seed, steps=steps)
    out = full.forward_all(data["x"])
    fig["h_spec"], fig["h_da"] = np.asarray(out["h_spec"]), np.asarray(out["h_da"])
    return records, fig


def plot_toy(fig: dict, path) -> None:
    """Fig. 4 (decision boundaries on the target) and Fig. 6 (PCA of h_spec vs h_DA)."""
    from tfdebias.evaluation.plots import pyplot

    plt = pyplot()

    data = fig["data"]
    x, y, d = data["x"], data["y"], data["domain"]
    f, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax = axes[0]
    gx, gy = np.meshgrid(np.linspace(x[:, 0].min() - 0.5, x[:, 0].max() + 0.5, 200),
                         np.linspace(x[:, 1].min() - 0.5, x[:, 1].max() + 0.5, 200))
    grid = np.stack([gx.ravel(), gy.ravel()], 1).astype("float32")
    for name, colour in (("DADIN-toy", "black"), ("DNN", "green")):
        p = np.asarray(fig["models"][name]({"x": grid}))[:, 0].reshape(gx.shape)
        if name == "DADIN-toy":
            ax.contourf(gx, gy, p, levels=[0, 0.5, 1], colors=["#c6dbef", "#fcbba1"], alpha=0.5)
        cs = ax.contour(gx, gy, p, levels=[0.5], colors=colour, linewidths=2)
        cs.collections[0].set_label(name) if hasattr(cs, "collections") else None
    s = d == 0
    ax.scatter(x[s & (y == 1), 0], x[s & (y == 1), 1], marker="+", c="red", s=25, label="source +")
    ax.scatter(x[s & (y == 0), 0], x[s & (y == 0), 1], marker="_", c="#3182bd", s=25, label="source -")
    ax.scatter(x[~s, 0], x[~s, 1], c="gold", s=10, edgecolors="k", linewidths=0.2, label="target")
    ax.plot([], [], c="black", label="DADIN-toy boundary")
    ax.plot([], [], c="green", label="DNN boundary")
    ax.set_title(f"Fig. 4: boundaries (300 source + {fig['k']} target labels)")
    ax.legend(fontsize=7, loc="lower left")
    for ax, key, title in ((axes[1], "h_spec", "Fig. 6(a): PCA of h_spec"),
                           (axes[2], "h_da", "Fig. 6(b): PCA of h_DA")):
        z = _pca2(fig[key])
        for dom, lab, mk, c, name in ((0, 1, "+", "red", "source +"), (0, 0, "_", "#3182bd", "source -"),
                                      (1, 1, "o", "orange", "target +"), (1, 0, "o", "#9ecae1", "target -")):
            sel = (d == dom) & (y == lab)
            ax.scatter(z[sel, 0], z[sel, 1], marker=mk, c=c, s=14, label=name, alpha=0.8)
        ax.set_title(f"{title} (domain probe AUC {linear_probe_auc(fig[key], d):.2f})")
        ax.legend(fontsize=7)
    f.tight_layout()
    f.savefig(path, dpi=100)
    plt.close(f)


def reproduce_toy(args) -> str:
    """``tfdebias reproduce dadin-toy``: the moons experiment over seeds + the figure."""
    from pathlib import Path

    from tfdebias.evaluation.results import write_results

    from tfdebias.errors import UsageError

    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 5)
    steps = args.steps or (300 if args.quick else 800)
    labels = getattr(args, "target_labels", None) or TARGET_LABELS
    records, first = [], None
    for seed in range(seeds):
        recs, fig = run_toy(seed, steps, labels)
        records += recs
        first = first or fig
        print(" ".join(f"{r['name']}: acc {r['metrics']['target/accuracy']:.3f}" for r in recs), flush=True)
    out = Path(args.out)
    notes = (f"Inter-twinning moons, target rotated {ROTATION:.0f} degrees, 300 + 300 points; "
             f"trained on 300 source + k labelled target points (k = "
             f"{', '.join(map(str, labels))}; the domain of every target point is read), "
             f"{steps} full-batch Adam steps, {seeds} seeds; "
             "scored on all 300 target points. `probe_auc/*` = how well a linear probe "
             "separates the domains in that representation (0.5 = not at all). "
             f"Figure: `moons.png` (seed 0, k = {min(labels)}).")
    write_results(out, records, title="DADIN toy check: rotated moons (the DADIN paper, Sec. 4.1)",
                  metrics=["target/accuracy", "target/auc", "probe_auc/h_spec", "probe_auc/h_da"],
                  bold_best={"target/accuracy": "max", "target/auc": "max"}, notes=notes,
                  plot_metric="target/accuracy")
    plot_toy(first, out / "moons.png")
    md = out / "results.md"
    md.write_text(md.read_text() + "\n![moons](moons.png)\n")
    return str(out)


def _label_counts(text: str) -> tuple:
    import argparse

    try:
        out = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        out = ()
    if not out or any(k < 0 or k > 300 for k in out):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated counts in 0..300, got {text!r}")
    return out


def _toy_arguments(parser):
    parser.add_argument("--steps", type=positive_int, default=None, help="full-batch training steps")
    parser.add_argument("--target-labels", type=_label_counts, default=None,
                        help="labelled target points per run, comma-separated (default "
                             f"{','.join(map(str, TARGET_LABELS))})")


def _register():
    from tfdebias.methods import Reproducer, register_reproducer

    register_reproducer(Reproducer(
        name="dadin-toy", help="DADIN's toy check: rotated inter-twinning moons (Sec. 4.1)",
        run=reproduce_toy, add_arguments=_toy_arguments, default_data=None, default_seeds=None))


_register()
