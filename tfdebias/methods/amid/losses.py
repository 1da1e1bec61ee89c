"""AMID's loss terms: the doubly robust estimator of Eq. (9) and the IPS estimator of
IPSCDR (Eq. 9 with ``e_hat = 0``), on numpy arrays or tensors, averaged per domain."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


# -- the doubly robust estimator -------------------------------------------------------
def doubly_robust_estimate(error, imputed_error, observed, propensity, *, clip: float = 0.0,
                           domain=None, n_domains: int = 1):
    """Eq. (9): ``1/|Z| sum_Z 1/|D^Z| sum_{u,v in D^Z} (e_hat + o (e - e_hat) / p_hat)``.

    Works on numpy arrays and tensors. ``error`` may hold anything where ``observed`` is
    0 (it is never read there). ``propensity`` is clipped to ``[clip, 1]``. With
    ``domain`` the mean is taken per domain and then over the domains present.
    """
    xp = tf if any(isinstance(a, tf.Tensor) for a in (error, imputed_error)) else np
    p = xp.clip_by_value(propensity, clip, 1.0) if xp is tf else np.clip(propensity, clip, 1.0)
    o = observed
    err = xp.where(o > 0, error, xp.zeros_like(error)) if xp is tf else np.where(o > 0, error, 0.0)
    terms = imputed_error + o * (err - imputed_error) / p
    return domain_mean(terms, domain, n_domains, xp)


def ips_estimate(error, observed, propensity, *, clip: float = 0.0, domain=None,
                 n_domains: int = 1):
    """The IPS estimator of IPSCDR [28]: Eq. (9) with ``e_hat = 0``."""
    zeros = tf.zeros_like(error) if isinstance(error, tf.Tensor) else np.zeros_like(error)
    return doubly_robust_estimate(error, zeros, observed, propensity, clip=clip,
                                  domain=domain, n_domains=n_domains)


def domain_mean(values, domain, n_domains, xp=tf):
    """``1/|Z| sum_Z mean_{rows of Z}`` over the domains present; plain mean if no domain."""
    if domain is None:
        return xp.reduce_mean(values) if xp is tf else float(np.mean(values))
    if xp is tf:
        oh = tf.one_hot(tf.cast(domain, tf.int32), n_domains, dtype=values.dtype)  # (R, Z)
        oh = tf.reshape(oh, tf.concat([tf.shape(values)[:1], [n_domains]], 0))
        flat = tf.reshape(values, [tf.shape(values)[0], -1])
        sums = tf.reduce_sum(oh * tf.reduce_mean(flat, axis=1, keepdims=True), axis=0)
        counts = tf.reduce_sum(oh, axis=0)
        present = tf.cast(counts > 0, values.dtype)
        return tf.reduce_sum(sums / tf.maximum(counts, 1.0)) / tf.maximum(tf.reduce_sum(present), 1.0)
    values = np.asarray(values, np.float64).reshape(len(domain), -1).mean(1)
    means = [values[domain == z].mean() for z in range(n_domains) if np.any(domain == z)]
    return float(np.mean(means))
