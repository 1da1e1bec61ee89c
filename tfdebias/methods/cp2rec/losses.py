"""CP2Rec's loss terms and its baselines', as functions of tensors (equation numbers
are the paper's; see the package docstring)."""

from __future__ import annotations

from keras import ops

_EPS = 1e-8


# -- the equations, as functions of tensors -----------------------------------------------


def cosine_orthogonality_loss(z, c):
    """COS purifier, Eq. (3)-(4): ``L_O = mean |z . c / (|z| |c|)|``.

    ``z`` (..., d) and ``c`` broadcastable to it (e.g. z (B, F, d), c (B, 1, d)); the mean
    runs over every leading position. 0 for orthogonal, 1 for (anti-)parallel inputs.
    """
    z = ops.convert_to_tensor(z)
    c = ops.cast(ops.convert_to_tensor(c), z.dtype)
    dot = ops.sum(z * c, axis=-1)
    norms = ops.sqrt(ops.sum(z * z, axis=-1) * ops.sum(c * c, axis=-1) + _EPS)
    return ops.mean(ops.abs(dot / norms))


def project_out(z, c):
    """PROJ purifier, Eq. (5)-(6): ``z' = z - (z . c / |c|) (c / |c|)``, orthogonal to c."""
    z = ops.convert_to_tensor(z)
    c = ops.cast(ops.convert_to_tensor(c), z.dtype)
    coef = ops.sum(z * c, axis=-1, keepdims=True) / (ops.sum(c * c, axis=-1, keepdims=True) + _EPS)
    return z - coef * c


def project_out_span(z, c, ridge: float = 1e-6):
    """PROJ on all proxy fields: each ``z_ij`` minus its orthogonal projection on the span
    of the row's proxy fields ``c_i1..c_iK``, ``z' = z - C (C^T C + ridge I)^-1 C^T z``.

    ``z`` (B, F_z, d), ``c`` (B, K, d) with K < d (else the span is all of R^d and z'
    vanishes); ``ridge`` keeps the K x K solve stable when fields are collinear. With
    K = 1 it is Eq. (5)-(6) with ``c_i`` the single field.
    """
    z = ops.convert_to_tensor(z)
    c = ops.cast(ops.convert_to_tensor(c), z.dtype)
    gram = ops.einsum("bkd,bld->bkl", c, c)
    scale = ops.mean(ops.diagonal(gram, axis1=1, axis2=2), axis=1)[:, None, None] + _EPS
    k = ops.shape(c)[1]
    eye = ops.eye(k, dtype=z.dtype)[None]
    rhs = ops.einsum("bkd,bfd->bkf", c, z)  # C^T z for every z field, (B, K, F_z)
    coef = ops.solve(gram + ridge * scale * eye, rhs)  # (B, K, F_z)
    return z - ops.einsum("bkd,bkf->bfd", c, coef)


def club_mutual_information(mu, logvar, c):
    """SOLVE purifier, Eq. (8): the CLUB upper bound of I(z; c) with a Gaussian
    ``q_theta(c | z) = N(mu(z), exp(logvar(z)))``::

        1/I sum_i [ log q(c_i | z_i) - 1/I sum_j log q(c_j | z_i) ]

    (the normalisers cancel). The inner mean over j is computed in closed form,
    ``mean_j (c_j - mu_i)^2 = mean(c^2) - 2 mu_i mean(c) + mu_i^2``, so the cost is
    O(B * D), not O(B^2 * D). ``mu``, ``logvar``, ``c``: (B, D).
    """
    c = ops.cast(c, mu.dtype)
    inv = ops.exp(-logvar)
    positive = -0.5 * ops.square(c - mu) * inv
    c_mean = ops.mean(c, axis=0, keepdims=True)
    c2_mean = ops.mean(ops.square(c), axis=0, keepdims=True)
    negative = -0.5 * (c2_mean - 2.0 * mu * c_mean + ops.square(mu)) * inv
    return ops.mean(ops.sum(positive - negative, axis=-1))


def club_log_likelihood(mu, logvar, c):
    """Mean log q_theta(c|z) of the batch (up to a constant): what CLUB maximises to fit
    its variational distribution (its "likelihood step")."""
    c = ops.cast(c, mu.dtype)
    ll = -0.5 * (ops.square(c - mu) * ops.exp(-logvar) + logvar)
    return ops.mean(ops.sum(ll, axis=-1))


def bce_with_logits(labels, logits):
    """Per-row binary cross-entropy from logits, (B,)."""
    y = ops.cast(ops.reshape(labels, (-1,)), logits.dtype)
    return y * ops.softplus(-logits) + (1.0 - y) * ops.softplus(logits)


def ips_loss(per_row, propensity, mask=None, n_total=None):
    """IPS estimate (Schnabel et al. 2016) of the mean loss over all events,
    ``1/n_total * sum_rows mask * loss / p``: the unbiased loss of Eq. (13).

    In training every row of a batch is observed (``mask=None``) and ``n_total`` is the
    batch size; the estimate is then the all-pairs loss times 1/density (a constant).
    With ``mask`` = the observed indicator over *all* events, ``n_total`` = their
    number, it is unbiased for the mean loss whenever ``p`` = P(observed).
    """
    per_row = ops.convert_to_tensor(per_row)
    w = ops.cast(propensity, per_row.dtype)
    contrib = per_row / w
    if mask is not None:
        contrib = contrib * ops.cast(mask, per_row.dtype)
    n = ops.cast(ops.shape(per_row)[0], per_row.dtype) if n_total is None else n_total
    return ops.sum(contrib) / n


def snips_loss(per_row, propensity):
    """Self-normalised IPS (Swaminathan & Joachims 2015): ``sum(w l) / sum(w)``, w = 1/p."""
    w = 1.0 / ops.cast(propensity, per_row.dtype)
    return ops.sum(w * per_row) / (ops.sum(w) + _EPS)


def rel_loss(labels, logits, propensity, nonnegative=True):
    """Relevance-maximisation loss of Rel-MF (Saito et al. 2020, Eq. (7)):
    ``-[y/theta log s + (1 - y/theta) log(1 - s)]`` with ``theta`` the propensity.

    With ``nonnegative`` (default) the coefficient ``1 - y/theta`` is clipped at 0, as in
    non-negative risk estimators (Kiryo et al. 2017): on logged rows only (no unlogged
    pairs to balance it) the plain estimator is unbounded below, since each clicked row
    with theta < 1 drives its logit to +inf (measured on ``confounded_ctr``: NCF test AUC
    0.41, log loss 12.9 after 3 epochs). ``nonnegative=False`` is the paper's form.
    """
    y = ops.cast(ops.reshape(labels, (-1,)), logits.dtype) / ops.cast(propensity, logits.dtype)
    neg = ops.maximum(1.0 - y, 0.0) if nonnegative else 1.0 - y
    return ops.mean(y * ops.softplus(-logits) + neg * ops.softplus(logits))


def cvib_info_loss(p_observed, p_unobserved, alpha, gamma):
    """CVIB's information term (Wang et al. 2020, contrastive counterfactual
    information bottleneck): the cross-entropy between the mean prediction on observed
    and on unobserved events (balancing), plus ``gamma * mean(p log p)`` on the observed
    ones (confidence penalty)."""
    po = ops.mean(p_observed)
    pu = ops.clip(ops.mean(p_unobserved), 1e-6, 1 - 1e-6)
    balance = -po * ops.log(pu) - (1.0 - po) * ops.log(1.0 - pu)
    p = ops.clip(p_observed, 1e-6, 1 - 1e-6)
    return alpha * balance + gamma * ops.mean(p * ops.log(p))


def dib_loss(labels, logits_z, logits_r, logits_zr, z_flat, alpha, gamma, beta):
    """DIB (Liu et al. 2021, Eq. (3)): ``min beta I(z;x) - I(z;y) + gamma I(z;r) - alpha
    I(r;y)`` over an unbiased component z and a biased component r. With
    ``I(z;r) = I(z;y) - H(y|r) + H(y|z,r)`` and ``I(.;y) = H(y) - H(y|.)`` it becomes::

        (1 - gamma) H(y|z) + (alpha - gamma) H(y|r) + gamma H(y|z,r) + beta ||z||^2

    with each H(y|.) a cross-entropy of a prediction from that component and the
    compression term an L2 bound. Written from the paper's Eq. (3) and its stated
    identity; the DIB authors' code was not available to check the exact tractable form.
    """
    h = lambda s: ops.mean(bce_with_logits(labels, s))  # noqa: E731
    comp = ops.mean(ops.sum(ops.square(z_flat), axis=-1))
    return (1.0 - gamma) * h(logits_z) + (alpha - gamma) * h(logits_r) + gamma * h(logits_zr) + beta * comp

