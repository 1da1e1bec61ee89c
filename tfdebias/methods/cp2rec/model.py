"""CP2Rec's layers and registered models (``cp2rec``, ``cp2rec_baseline``)."""

from __future__ import annotations

import keras
from keras import ops

from tfdebias.errors import SchemaError, UsageError
from tfdebias.layers.feature_embedding import FeatureEmbedding, as_schema
from tfdebias.layers.mlp import MLP
from tfdebias.methods.cp2rec.data import (
    INDEPENDENCE_HAT,
    PROPENSITY_CLIP,
    PROPENSITY_HAT,
    PROPENSITY_ORACLE,
    REL_PROPENSITY_HAT,
    add_propensity,
)
from tfdebias.methods.cp2rec.losses import (
    bce_with_logits,
    club_log_likelihood,
    club_mutual_information,
    cosine_orthogonality_loss,
    cvib_info_loss,
    dib_loss,
    ips_loss,
    project_out,
    project_out_span,
    rel_loss,
    snips_loss,
)
from tfdebias.models import register, serving_specs
from tfdebias.models.base import split_sides

PURIFIERS = ("cos", "proj", "solve", "none")
LOSSES = ("ips", "snips", "rel", "bce", "cvib", "dib")
BACKBONES = ("ncf", "dcn")
PROPENSITIES = ("estimated", "independence", "oracle")
#: the column each ``propensity`` setting reads
PROPENSITY_COLUMNS = {"estimated": PROPENSITY_HAT, "independence": INDEPENDENCE_HAT,
                      "oracle": PROPENSITY_ORACLE}
PROJ_BASES = ("auto", "span", "mean")
LU_NORMALIZATIONS = ("self", "none")


@keras.saving.register_keras_serializable(package="tfdebias")
class ClubEstimator(keras.layers.Layer):
    """CLUB's variational ``q_theta(c | z)`` (Cheng et al. 2020): a diagonal Gaussian
    whose mean and log-variance are two-layer MLPs of z (log-variance through tanh)."""

    def __init__(self, c_dim: int, hidden: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.c_dim, self.hidden = int(c_dim), int(hidden)
        self.mu = MLP([self.hidden, self.c_dim], activation="relu", name="mu")
        self.logvar = MLP([self.hidden], activation="relu", name="logvar_hidden")
        self.logvar_out = keras.layers.Dense(self.c_dim, activation="tanh", name="logvar")

    def call(self, z):
        return self.mu(z), self.logvar_out(self.logvar(z))

    def get_config(self):
        return {**super().get_config(), "c_dim": self.c_dim, "hidden": self.hidden}


# -- the model ------------------------------------------------------------------------------


@register("cp2rec")
@keras.saving.register_keras_serializable(package="tfdebias")
class CP2Rec(keras.Model):
    """CP2Rec (Eq. (2)-(13)) and, through ``abt``/``purifier``/``loss``, its ablations
    and the baselines that share its features and tower.

    Args:
      schema: the data set's schema; its ``proxy`` features are the confounding proxies c.
      backbone: ``"ncf"`` or ``"dcn"``; its tower is the shared f of Eq. (9)/(12).
      purifier: ``"cos"`` (Eq. 4), ``"proj"`` (Eq. 5-6), ``"solve"`` (CLUB, Eq. 8) or
        ``"none"`` (no bias disentangling).
      abt: the accuracy-bias tradeoff module (Eq. 11-13); without it one head
        ``f([c, z'])`` is trained with ``loss`` (plus beta L_O) and served.
      loss: the unbiased loss of L_U (``"ips"`` in the paper; ``"snips"``, ``"rel"``,
        ``"bce"``), or, with ``abt=False``, the single head's loss (also ``"cvib"``,
        ``"dib"``).
      gamma, beta: the weights of L_B and L_O in Eq. (2).
      lambda_reg: lambda of Eq. (2), an L2 penalty on the looked-up embedding rows.
      embedding_dim: d (10 in the paper).
      propensity: ``"estimated"`` (``propensity_hat``: exposure ``n_u n_i / N`` times the
        examination curve ``kappa_hat(position)``), ``"independence"`` (the paper's
        ``n_u n_i / N`` alone) or ``"oracle"`` (``propensity_oracle``: the simulator's true
        exposure probability times its true examination); see :func:`add_propensity`.
      propensity_clip: lower clip of propensities (upper clip of the IPS weights).
      lu_normalization: ``"self"`` (default): L_U = sum(w l) / sum(w) over the batch, so
        its scale is that of L_B and gamma, beta weigh what they say; ``"none"``: the
        plain IPS mean ``mean(w l)`` (about mean(w) times larger).
      proj_basis: PROJ's basis: ``"span"`` removes from every z field its projection on
        the span of all the row's proxy fields; ``"mean"`` on their mean c_bar (the
        paper's single c_i, Eq. 5); ``"auto"`` (default) = span when there are fewer
        proxy fields than ``embedding_dim`` (else the span is the whole space), else mean.
      refine_activation: sigma of Eq. (11).
      backbone_args: constructor arguments of the backbone (hidden units, cross layers).
      club_hidden: hidden width of q_theta.
      cvib_alpha, cvib_gamma, dib_alpha, dib_gamma, dib_beta: the baselines' weights.

    ``call`` returns y_U (B, 1) with ABT, else the single head: what is served.

    Example:

    >>> splits = add_propensity(splits, schema)                       # doctest: +SKIP
    >>> model = CP2Rec(schema, backbone="dcn", purifier="proj")       # doctest: +SKIP
    >>> model.compile(optimizer="adam"); model.fit(train_ds)          # doctest: +SKIP
    """

    model_name = "cp2rec"

    def __init__(
        self,
        schema,
        backbone: str = "dcn",
        purifier: str = "proj",
        abt: bool = True,
        loss: str = "ips",
        gamma: float = 0.1,
        beta: float = 0.01,
        lambda_reg: float = 1e-6,
        embedding_dim: int = 10,
        propensity: str = "estimated",
        propensity_clip: float = PROPENSITY_CLIP,
        lu_normalization: str = "self",
        proj_basis: str = "auto",
        refine_activation: str = "tanh",
        backbone_args: dict | None = None,
        club_hidden: int = 64,
        cvib_alpha: float = 0.1,
        cvib_gamma: float = 0.01,
        dib_alpha: float = 0.1,
        dib_gamma: float = 0.1,
        dib_beta: float = 1e-4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        from tfdebias import models

        self.schema = as_schema(schema)
        self.backbone_name = str(backbone).lower()
        self.purifier, self.abt, self.loss_name = str(purifier).lower(), bool(abt), str(loss).lower()
        if self.backbone_name not in BACKBONES:
            raise UsageError(f"CP2Rec backbone must be one of {BACKBONES}, got {backbone!r}")
        if self.purifier not in PURIFIERS:
            raise UsageError(f"purifier must be one of {PURIFIERS}, got {purifier!r}")
        if self.loss_name not in LOSSES:
            raise UsageError(f"loss must be one of {LOSSES}, got {loss!r}")
        if self.abt and self.loss_name in ("cvib", "dib"):
            raise UsageError(f"loss={loss!r} is a single-head baseline: use it with abt=False")
        if propensity not in PROPENSITIES:
            raise UsageError(f"propensity must be one of {PROPENSITIES}, got {propensity!r}")
        if lu_normalization not in LU_NORMALIZATIONS:
            raise UsageError(f"lu_normalization must be one of {LU_NORMALIZATIONS}, got {lu_normalization!r}")
        if proj_basis not in PROJ_BASES:
            raise UsageError(f"proj_basis must be one of {PROJ_BASES}, got {proj_basis!r}")
        self.lu_normalization, self.proj_basis_arg = lu_normalization, proj_basis
        if not 0 < float(propensity_clip) <= 1:
            raise UsageError(f"propensity_clip must be in (0, 1], got {propensity_clip}")
        self.gamma, self.beta, self.lambda_reg = float(gamma), float(beta), float(lambda_reg)
        self.embedding_dim = int(embedding_dim)
        self.propensity, self.propensity_clip = propensity, float(propensity_clip)
        self.refine_activation = refine_activation
        self.backbone_args = dict(backbone_args or {})
        self.club_hidden = int(club_hidden)
        self.cvib_alpha, self.cvib_gamma = float(cvib_alpha), float(cvib_gamma)
        self.dib_alpha, self.dib_gamma, self.dib_beta = float(dib_alpha), float(dib_gamma), float(dib_beta)

        # Feature partitioning (Sec. 4.2): proxies -> c, every other input -> z.
        self.proxy_names = [f.name for f in self.schema.proxies]
        if not self.proxy_names:
            raise SchemaError("CP2Rec needs confounding proxies: the schema has no feature with role 'proxy'")
        self.z_names = [f.name for f in self.schema.inputs if f.role != "proxy"]
        if not self.z_names:
            raise SchemaError("CP2Rec needs inputs besides the proxies")
        if self.propensity == "oracle" and self.schema.exposure is None:
            raise SchemaError("propensity='oracle' needs an 'exposure' column in the schema")

        d = self.embedding_dim
        self.embed = FeatureEmbedding(self.schema, d, name="embed")
        # every dense proxy is a field of its own (value x learned vector), so the proxy
        # fields span what PROJ removes; the dense z inputs share one field
        self.c_dense = self._dense_field("c", self.proxy_names, per_feature=True)
        self.z_dense = self._dense_field("z", self.z_names)
        self.n_c = len(self.embed.field_names(include=self.proxy_names)) + (
            self.embed.dense_width(include=self.proxy_names) if self.c_dense is not None else 0)
        self.proj_basis = (("span" if self.n_c < d else "mean") if proj_basis == "auto" else proj_basis)
        self.n_z = len(self.embed.field_names(include=self.z_names)) + (self.z_dense is not None)
        if self.n_z == 0:
            raise SchemaError("CP2Rec: no z fields to purify")

        self.backbone = models.build(self.backbone_name, self.schema, embedding_dim=d, **self.backbone_args)
        if self.backbone_name == "ncf":
            z_fields = self.embed.field_names(include=self.z_names) + (["<dense z>"] if self.z_dense else [])
            self.user_idx = [k for k, n in enumerate(z_fields) if n in self.backbone.user_names]
            self.item_idx = [k for k, n in enumerate(z_fields) if n in self.backbone.item_names]
            if not self.user_idx or not self.item_idx:
                raise SchemaError("CP2Rec-NCF needs categorical user-side and item-side features")

        self.refiner = None
        if self.abt:  # Eq. (11): c' = sigma(W c + b)
            self.refiner = keras.layers.Dense(self.n_c * d, activation=refine_activation, name="refiner")
        self.club = ClubEstimator(self.n_c * d, self.club_hidden, name="club") if self.purifier == "solve" else None
        self.bias_embed = None
        if self.loss_name == "dib":  # DIB's biased component r: its own embedding
            self.bias_embed = FeatureEmbedding(self.schema, d, name="bias_embed")
            self.bias_c_dense = self._dense_field("rc", self.proxy_names, per_feature=True)
            self.bias_z_dense = self._dense_field("rz", self.z_names)

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.auc_metric = keras.metrics.AUC(name="auc")
        self.term_trackers = {
            k: keras.metrics.Mean(name=k) for k in ("L_B", "L_U", "L_O")
        }

    def build(self, input_shape=None):
        # Variables are made by the first call (``engine.build_model`` calls the model on
        # a sample batch before the optimizer exists); the backbone's own embedding
        # layers stay unbuilt on purpose (CP2Rec embeds the features itself).
        self.built = True

    def _dense_field(self, tag, names, per_feature=False):
        width = self.embed.dense_width(include=names)
        if not width:
            return None
        if per_feature:  # one field per dense input: normalised value x its own vector
            proj = keras.layers.EinsumDense("bn,nd->bnd", output_shape=(width, self.embedding_dim),
                                            name=f"{tag}_dense_fields")
        else:  # one field: a bias-free linear map of all of them
            proj = keras.layers.Dense(self.embedding_dim, use_bias=False, name=f"{tag}_dense_proj")
        return {"norm": keras.layers.BatchNormalization(momentum=0.9, name=f"{tag}_dense_norm"),
                "proj": proj, "per_feature": per_feature}

    # -- config ---------------------------------------------------------------------------
    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable, "schema": self.schema.to_dict(),
            "backbone": self.backbone_name, "purifier": self.purifier, "abt": self.abt,
            "loss": self.loss_name, "gamma": self.gamma, "beta": self.beta,
            "lambda_reg": self.lambda_reg, "embedding_dim": self.embedding_dim,
            "propensity": self.propensity, "propensity_clip": self.propensity_clip,
            "lu_normalization": self.lu_normalization, "proj_basis": self.proj_basis_arg,
            "refine_activation": self.refine_activation, "backbone_args": self.backbone_args,
            "club_hidden": self.club_hidden, "cvib_alpha": self.cvib_alpha,
            "cvib_gamma": self.cvib_gamma, "dib_alpha": self.dib_alpha,
            "dib_gamma": self.dib_gamma, "dib_beta": self.dib_beta,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def prepare_splits(cls, splits, schema, train_split="train"):
        """Engine/tuner hook: add the propensity columns (:func:`add_propensity`)."""
        if train_split not in splits:
            return splits  # the caller reports the missing split
        return add_propensity(splits, schema, train_split)

    # -- the network ------------------------------------------------------------------------
    def _fields(self, embed, dense_field, features, names, training):
        out = embed(features, include=names)
        fields = out["fields"]
        if dense_field is not None:
            dense = dense_field["norm"](out["dense"], training=training)
            extra = dense_field["proj"](dense)
            extra = extra if dense_field["per_feature"] else extra[:, None, :]
            fields = ops.concatenate([fields, ops.cast(extra, fields.dtype)], axis=1) if fields.shape[1] else extra
        return fields

    def partition(self, features, training=False):
        """Feature partitioning + embedding (Sec. 4.2-4.3): ``(c (B,F_c,d), z (B,F_z,d))``."""
        c = self._fields(self.embed, self.c_dense, features, self.proxy_names, training)
        z = self._fields(self.embed, self.z_dense, features, self.z_names, training)
        return c, z

    def _tower(self, c, z, training=False):
        """f([c, z']) of Eq. (9) and (12): the backbone's prediction tower, logits (B,)."""
        flat = lambda t: ops.reshape(t, (-1, t.shape[1] * t.shape[2]))  # noqa: E731
        x = ops.concatenate([flat(c), flat(z)], axis=1)
        if self.backbone_name == "dcn":
            return self.backbone.tower(x, training=training)[0]
        user = ops.sum(ops.take(z, self.user_idx, axis=1), axis=1)
        item = ops.sum(ops.take(z, self.item_idx, axis=1), axis=1)
        return self.backbone.tower(user * item, x, training=training)[0]

    def heads(self, features, training=False):
        """One forward pass: every quantity the losses need (a dict of tensors)."""
        c, z = self.partition(features, training)
        # lambda ||theta|| of Eq. (2): L2 on the embedded rows of the batch (sparse).
        reg = ops.mean(ops.sum(ops.square(c), axis=(1, 2)) + ops.sum(ops.square(z), axis=(1, 2)))
        out = {"c": c, "z": z, "reg": self.lambda_reg * ops.cast(reg, "float32")}
        # The purifiers move z only: c enters them through stop_gradient, so L_O and the
        # projection cannot shrink or turn the proxy embeddings to satisfy the constraint.
        c_fixed = ops.stop_gradient(c)
        if self.purifier == "proj":  # Eq. (5)-(6)
            if self.proj_basis == "span":
                z = project_out_span(z, c_fixed)
            else:
                z = project_out(z, ops.mean(c_fixed, axis=1, keepdims=True))
        elif self.purifier == "cos":  # Eq. (4), every (z field, proxy field) pair
            out["L_O"] = cosine_orthogonality_loss(z[:, :, None, :], c_fixed[:, None, :, :])
        elif self.purifier == "solve":
            c_flat = ops.reshape(c_fixed, (-1, self.n_c * self.embedding_dim))
            z_flat = ops.reshape(z, (-1, self.n_z * self.embedding_dim))
            mu, logvar = self.club(z_flat)
            out["L_O"] = club_mutual_information(mu, logvar, c_flat)  # Eq. (8)
            mu_q, logvar_q = self.club(ops.stop_gradient(z_flat))
            out["club_nll"] = -club_log_likelihood(mu_q, logvar_q, ops.stop_gradient(c_flat))
        out["z_purified"] = z
        out["logits_B"] = self._tower(c, z, training)  # Eq. (9)
        if self.abt:
            c_flat = ops.reshape(c, (-1, self.n_c * self.embedding_dim))
            c_ref = ops.reshape(self.refiner(c_flat), (-1, self.n_c, self.embedding_dim))  # Eq. (11)
            out["logits_U"] = self._tower(ops.cast(c_ref, c.dtype), z, training)  # Eq. (12)
        if self.loss_name == "dib":
            rc = self._fields(self.bias_embed, self.bias_c_dense, features, self.proxy_names, training)
            rz = self._fields(self.bias_embed, self.bias_z_dense, features, self.z_names, training)
            out["logits_r"] = self._tower(rc, rz, training)
            out["logits_zr"] = self._tower(c + rc, z + rz, training)
        return out

    def served_logits(self, out):
        return out["logits_U"] if self.abt else out["logits_B"]

    def call(self, features, training=False):
        logits = self.served_logits(self.heads(features, training=training))
        return ops.sigmoid(ops.cast(logits, "float32"))[:, None]

    def serving_endpoints(self, schema):
        """An extra ``biased`` signature serving y_B (the default serves ``call``: y_U)."""
        import tensorflow as tf

        def biased(features):
            out = self.heads(features, training=False)
            return {"prediction": tf.reshape(tf.sigmoid(tf.cast(out["logits_B"], tf.float32)), [-1])}

        return {"biased": (biased, [serving_specs(schema)])}

    # -- the losses -----------------------------------------------------------------------------
    def _propensity(self, features, rel=False):
        key = PROPENSITY_COLUMNS[self.propensity]
        if rel and self.propensity != "oracle":
            key = REL_PROPENSITY_HAT
        if key not in features:
            raise UsageError(
                f"CP2Rec (loss={self.loss_name!r}, propensity={self.propensity!r}) needs a {key!r} column "
                "in every batch; add it with tfdebias.methods.cp2rec.add_propensity(splits, schema)")
        p = ops.cast(ops.reshape(features[key], (-1,)), "float32")
        return ops.clip(p, self.propensity_clip, 1.0)

    def _unbiased(self, name, labels, logits, features, normalize=False):
        if name == "bce":
            return ops.mean(bce_with_logits(labels, logits))
        p = ops.cast(self._propensity(features, rel=name == "rel"), logits.dtype)
        if name == "ips":
            if normalize:  # L_U of CP2Rec with lu_normalization="self"
                return snips_loss(bce_with_logits(labels, logits), p)
            return ips_loss(bce_with_logits(labels, logits), p)
        if name == "snips":
            return snips_loss(bce_with_logits(labels, logits), p)
        return rel_loss(labels, logits, p)

    def _shuffle_items(self, features):
        """CVIB's unobserved events: the batch with every non-user input permuted."""
        import tensorflow as tf

        n = ops.shape(features[self.z_names[0]])[0]
        perm = tf.random.shuffle(tf.range(n))
        users = set(self.backbone.user_names) if self.backbone_name == "ncf" else set(
            split_sides(self.schema)[0])
        return {k: (v if k in users else tf.gather(v, perm)) for k, v in features.items()
                if k in self.schema and self.schema[k].role in ("categorical", "dense", "sequence",
                                                                 "vector", "domain", "proxy")}

    def loss_terms(self, features, labels, training=False):
        """Every named loss term of a batch, and ``loss`` (Eq. 2): the ONE loss function.

        Terms: ``L_B`` (Eq. 10), ``L_U`` (Eq. 13), ``L_O`` (Eq. 4 or 8), ``reg``
        (lambda ||theta||), the baselines' ``info`` (CVIB), ``club_nll`` (q_theta's own
        objective, trained only on q_theta's variables), ``logits`` (the served head).
        """
        out = self.heads(features, training=training)
        zero = ops.zeros((), "float32")
        terms = {"L_O": ops.cast(out.get("L_O", zero), "float32")}
        reg = out["reg"]
        terms["reg"] = reg
        if self.abt:
            terms["L_B"] = ops.mean(bce_with_logits(labels, out["logits_B"]))
            terms["L_U"] = self._unbiased(self.loss_name, labels, out["logits_U"], features,
                                          normalize=self.lu_normalization == "self")
            total = self.gamma * terms["L_B"] + terms["L_U"]
        else:
            if self.loss_name == "dib":
                main = dib_loss(labels, out["logits_B"], out["logits_r"], out["logits_zr"],
                                ops.reshape(out["z"], (-1, self.n_z * self.embedding_dim)),
                                self.dib_alpha, self.dib_gamma, self.dib_beta)
            elif self.loss_name == "cvib":
                main = ops.mean(bce_with_logits(labels, out["logits_B"]))
                unobs = self.served_logits(self.heads(self._shuffle_items(features), training=training))
                terms["info"] = cvib_info_loss(ops.sigmoid(out["logits_B"]), ops.sigmoid(unobs),
                                               self.cvib_alpha, self.cvib_gamma)
                main = main + terms["info"]
            else:
                main = self._unbiased(self.loss_name, labels, out["logits_B"], features)
            terms["L_B"] = main
            terms["L_U"] = zero
            total = main
        total = total + self.beta * terms["L_O"] + reg
        terms["loss"] = total
        if "club_nll" in out:
            terms["club_nll"] = out["club_nll"]
        terms["logits"] = self.served_logits(out)
        return terms

    # -- Keras steps ---------------------------------------------------------------------------
    @property
    def metrics(self):
        return [self.loss_tracker, self.auc_metric, *self.term_trackers.values()]

    def _record(self, terms, labels):
        self.loss_tracker.update_state(terms["loss"])
        for k, t in self.term_trackers.items():
            t.update_state(terms[k])
        self.auc_metric.update_state(ops.reshape(labels, (-1,)), ops.sigmoid(terms["logits"]))
        return {m.name: m.result() for m in self.metrics}

    def club_variables(self):
        return list(self.club.trainable_variables) if self.club is not None else []

    def train_step(self, data):
        import tensorflow as tf

        features, labels = data[0], data[1]
        with tf.GradientTape(persistent=self.club is not None) as tape:
            terms = self.loss_terms(features, labels, training=True)
        q_ids = {id(v) for v in self.club_variables()}
        main = [v for v in self.trainable_variables if id(v) not in q_ids]
        pairs = list(zip(tape.gradient(terms["loss"], main), main))
        if self.club is not None:  # CLUB's likelihood step: q_theta fits log q(c|z) only
            qv = self.club_variables()
            pairs += list(zip(tape.gradient(terms["club_nll"], qv), qv))
            del tape
        self.optimizer.apply_gradients([(g, v) for g, v in pairs if g is not None])
        return self._record(terms, labels)

    def test_step(self, data):
        features, labels = data[0], data[1]
        return self._record(self.loss_terms(features, labels, training=False), labels)


@register("cp2rec_baseline")
@keras.saving.register_keras_serializable(package="tfdebias")
class CP2RecBaseline(CP2Rec):
    """The baselines on CP2Rec's features and tower: no ABT, no purifier, one head
    trained with ``loss`` = ``"ips"``, ``"snips"``, ``"rel"``, ``"cvib"``, ``"dib"``
    or ``"bce"`` (the "w/o ABT, BD" ablation)."""

    model_name = "cp2rec_baseline"

    def __init__(self, schema, loss: str = "ips", purifier: str = "none", abt: bool = False, **kwargs):
        super().__init__(schema, loss=loss, purifier=purifier, abt=abt, **kwargs)
