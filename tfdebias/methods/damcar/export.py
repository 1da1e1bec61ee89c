"""Export of the DAMCAR cascade (retriever with its item index, ranker) for TF Serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfdebias.methods.damcar.model import HybridRetrieval


def export_cascade(retriever: HybridRetrieval, ranker, schema, corpus: dict, out_dir, *,
                   k: int = 100, check_rows: dict | None = None, verify: bool = True) -> dict:
    """Export the cascade for TF Serving: ``OUT/retrieval`` (signatures
    ``serving_default``, ``user_tower``, ``item_tower``, ``retrieve`` with the item
    ``corpus`` baked in as a ``keras_rs`` brute-force index) and ``OUT/ranker``
    (``serving_default``). With ``verify``, both are run in a clean Python process that
    cannot import tfdebias (:func:`tfdebias.export.verify_in_clean_process`) on
    ``check_rows`` (user + item features) and compared with the Keras models."""
    from tfdebias.export import export_saved_model, verify_in_clean_process

    out = Path(out_dir)
    retriever.attach_index(corpus, k=k)
    paths = {"retrieval": export_saved_model(retriever, schema, out / "retrieval"),
             "ranker": export_saved_model(ranker, schema, out / "ranker")}
    report = {name: str(p) for name, p in paths.items()}
    if verify and check_rows is not None:
        users = {n: check_rows[n] for n in retriever.dssm.user_names}
        scores, _ = retriever.index(retriever.user_tower(users))
        report["retrieve_check"] = verify_in_clean_process(
            paths["retrieval"], users, np.asarray(scores), signature="retrieve", output="scores")
        feats = {n: check_rows[n] for n in retriever.dssm.user_names + retriever.dssm.item_names}
        report["ranker_check"] = verify_in_clean_process(
            paths["ranker"], feats, np.asarray(ranker(feats)).reshape(-1))
    return report
