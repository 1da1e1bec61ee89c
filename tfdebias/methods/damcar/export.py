"""Export of the DAMCAR cascade (retriever with its item index, ranker) for TF Serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfdebias.methods.damcar.model import HybridRetrieval


def scale_features(features: dict, scaling: dict | None) -> dict:
    """The models' view of raw dense inputs, as :func:`~tfdebias.methods.damcar.prepare_cascade`
    computes it: ``scaling[name] = (log, lo, hi)`` -> ``((log1p(max(v, 0)) if log else v)
    - lo) / (hi - lo)``. Works on tensors (inside a SavedModel) and numpy arrays."""
    import tensorflow as tf

    if not scaling:
        return features
    out = dict(features)
    for name, (use_log, lo, hi) in scaling.items():
        if name not in out:
            continue
        v = tf.cast(out[name], tf.float32)
        if use_log:
            v = tf.math.log1p(tf.maximum(v, 0.0))
        out[name] = (v - float(lo)) / float(max(hi - lo, 1e-9))
    return out


def unscale_features(features: dict, scaling: dict | None) -> dict:
    """Raw values of scaled numpy inputs (the inverse of :func:`scale_features`)."""
    out = dict(features)
    for name, (use_log, lo, hi) in (scaling or {}).items():
        if name in out:
            v = np.asarray(out[name], np.float64) * max(hi - lo, 1e-9) + lo
            out[name] = (np.expm1(v) if use_log else v).astype(np.float32)
    return out


def _scaled_endpoints(model, schema, scaling) -> dict | None:
    """``serving_default`` and every endpoint of ``model`` that reads a scaled input,
    wrapped so that the SavedModel takes raw features (``None`` without scaling)."""
    from tfdebias.export.saved_model import default_endpoint

    if not scaling:
        return None
    eps = {"serving_default": default_endpoint(model, schema)}
    hook = getattr(model, "serving_endpoints", None)
    if callable(hook):
        eps.update(hook(schema) or {})
    def raw_in(fn):
        def serve(features):
            return fn(scale_features(features, scaling))
        return serve

    out = {}
    for name, (fn, sig) in eps.items():
        names = set().union(*(s.keys() for s in sig if isinstance(s, dict)))
        if names & set(scaling):
            out[name] = (raw_in(fn), sig)
    return out


def export_cascade(retriever: HybridRetrieval, ranker, schema, corpus: dict, out_dir, *,
                   k: int = 100, check_rows: dict | None = None, verify: bool = True,
                   scaling: dict | None = None, extra_retrievers: dict | None = None) -> dict:
    """Export the cascade for TF Serving: ``OUT/retrieval`` (signatures
    ``serving_default``, ``user_tower``, ``item_tower``, ``retrieve`` with the item
    ``corpus`` baked in as a ``keras_rs`` brute-force index) and ``OUT/ranker``
    (``serving_default``); each of ``extra_retrievers`` (name -> retriever, e.g. BC
    beside DAMCAR) as ``OUT/retrieval_<name>`` with its own index.

    ``scaling`` (``CascadeData.scaling``): the dense inputs' scaling goes inside the
    SavedModels, so a client sends raw features (``duration`` in seconds); ``corpus`` and
    ``check_rows`` are given as the models see them (scaled). With ``verify``, every
    export is run in a clean Python process that cannot import tfdebias
    (:func:`tfdebias.export.verify_in_clean_process`) on ``check_rows`` (user + item
    features; sent raw when ``scaling`` is given) and compared with the Keras models."""
    from tfdebias.export import export_saved_model, verify_in_clean_process

    out = Path(out_dir)
    retrievers = {"retrieval": retriever, **{f"retrieval_{n.lower().replace(' ', '_')}": r
                                             for n, r in (extra_retrievers or {}).items()}}
    paths = {}
    for name, r in retrievers.items():
        r.attach_index(corpus, k=k)
        paths[name] = export_saved_model(r, schema, out / name,
                                         endpoints=_scaled_endpoints(r, schema, scaling))
    paths["ranker"] = export_saved_model(ranker, schema, out / "ranker",
                                         endpoints=_scaled_endpoints(ranker, schema, scaling))
    report = {name: str(p) for name, p in paths.items()}
    if verify and check_rows is not None:
        raw = unscale_features(check_rows, scaling)
        for name, r in retrievers.items():
            users = {n: check_rows[n] for n in r.dssm.user_names}
            scores, _ = r.index(r.user_tower(users))
            key = "retrieve_check" if name == "retrieval" else f"{name}_retrieve_check"
            report[key] = verify_in_clean_process(
                paths[name], users, np.asarray(scores), signature="retrieve", output="scores")
        feats = {n: check_rows[n] for n in retriever.dssm.user_names + retriever.dssm.item_names}
        # the retriever's serving_default reads the item inputs: raw in, scaled inside
        report["retrieval_default_check"] = verify_in_clean_process(
            paths["retrieval"], {n: raw[n] for n in feats},
            np.asarray(retriever(feats)).reshape(-1))
        report["ranker_check"] = verify_in_clean_process(
            paths["ranker"], {n: raw[n] for n in feats}, np.asarray(ranker(feats)).reshape(-1))
    return report
