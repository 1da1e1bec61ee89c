"""DADIN's loss, Eq. (15)-(22) of Kong et al. (2023): :func:`dadin_loss_terms`, the one
loss function of the model (the package docstring, :mod:`tfdebias.methods.dadin`, says
which reading of Eq. (21)/(22) it implements and why)."""

from __future__ import annotations

from keras import ops


def _bce_from_logits(labels, logits):
    labels = ops.cast(labels, logits.dtype)
    return ops.maximum(logits, 0.0) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))


#: ``threshold`` value that splits each domain of a batch at its own median ``y_hat``
DOMAIN_MEDIAN = "domain_median"


def intra_class_membership(y_hat, domain, threshold):
    """1 where a row is in class 1 of Eq. (17)-(18), else 0 (B,), from the detached
    ``y_hat``. ``threshold`` is the paper's fixed ``T`` (class 1 = ``y_hat >= T``) or
    :data:`DOMAIN_MEDIAN`: ``T`` is the median ``y_hat`` of the row's own domain in the
    batch (the upper median: class 1 holds ``ceil(n_d / 2)`` of a domain's ``n_d`` rows),
    so both domains fall in both classes whatever their base rates."""
    if not isinstance(threshold, str):
        return ops.cast(y_hat >= threshold, "float32")
    big = ops.ones_like(y_hat) * 2.0  # above every probability: sorts last
    out = ops.zeros_like(y_hat)
    for d in (0.0, 1.0):
        mask = ops.equal(domain, d)
        ordered = ops.sort(ops.where(mask, y_hat, big))
        n = ops.sum(ops.cast(mask, "int32"))
        median = ops.take(ordered, n // 2)  # n = 0: no row uses it
        out = out + ops.cast(ops.logical_and(mask, y_hat >= median), "float32")
    return out


def dadin_loss_terms(
    labels,
    y_logit,
    domain,
    d_global=None,
    d_intra1=None,
    d_intra0=None,
    *,
    lambda_y: float = 1.0,
    lambda_global: float = 1.0,
    lambda_intra: float = 1.0,
    alpha: float = 0.5,
    threshold: float | str = 0.2,
    sample_weight=None,
) -> dict:
    """DADIN's named loss terms for one batch (Eq. (15)-(18), (20), (22)).

    Args:
      labels: clicks (B,) in {0, 1}.
      y_logit: the label predictor's logit (B,); ``y_hat = sigmoid(y_logit)``.
      domain: domain labels ``d_i`` (B,): 1 = target, 0 = source.
      d_global, d_intra1, d_intra0: logits (B,) of ``D_dagger``, ``D^1``, ``D^0``
        (``None`` where the variant has no such classifier: the term is 0).
      threshold: ``T``; a row is in class 1 when ``y_hat >= T`` (Eq. (17)-(18)); or
        :data:`DOMAIN_MEDIAN` (:func:`intra_class_membership`).
      sample_weight: optional per-row weights of ``L_y``.

    Returns ``{"loss_y", "loss_global", "loss_intra0", "loss_intra1", "loss"}`` where
    ``loss = lambda_y L_y + lambda_global L_d_dagger
    + lambda_intra (alpha L_d^0 + (1 - alpha) L_d^1)`` (the package docstring says why
    Eq. (22) and not the literal Eq. (21)).
    """
    y_logit = ops.reshape(ops.cast(y_logit, "float32"), (-1,))
    labels = ops.reshape(ops.cast(labels, "float32"), (-1,))
    domain = ops.reshape(ops.cast(domain, "float32"), (-1,))
    per_row = _bce_from_logits(labels, y_logit)  # Eq. (15)
    if sample_weight is not None:
        w = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        loss_y = ops.sum(per_row * w) / ops.maximum(ops.sum(w), 1e-12)
    else:
        loss_y = ops.mean(per_row)
    zero = ops.zeros((), "float32")
    flat = lambda z: ops.reshape(ops.cast(z, "float32"), (-1,))  # noqa: E731
    loss_global = zero
    if d_global is not None:  # Eq. (16)
        loss_global = ops.mean(_bce_from_logits(domain, flat(d_global)))
    loss_1 = loss_0 = zero
    if d_intra1 is not None or d_intra0 is not None:
        y_hat = ops.stop_gradient(ops.sigmoid(y_logit))
        in_1 = intra_class_membership(y_hat, domain, threshold)  # the rho rows of Eq. (17)
        in_0 = 1.0 - in_1  # the tau rows of Eq. (18)
        if d_intra1 is not None:
            l1 = _bce_from_logits(domain, flat(d_intra1))
            loss_1 = ops.sum(l1 * in_1) / ops.maximum(ops.sum(in_1), 1.0)
        if d_intra0 is not None:
            l0 = _bce_from_logits(domain, flat(d_intra0))
            loss_0 = ops.sum(l0 * in_0) / ops.maximum(ops.sum(in_0), 1.0)
    total = (lambda_y * loss_y + lambda_global * loss_global
             + lambda_intra * (alpha * loss_0 + (1.0 - alpha) * loss_1))  # Eq. (20), (22)
    return {"loss_y": loss_y, "loss_global": loss_global, "loss_intra0": loss_0,
            "loss_intra1": loss_1, "loss": total}
