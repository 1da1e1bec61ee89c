"""Hyper-parameter search with keras-tuner (installed as ``tfdebias.tuning``).

* :data:`SEARCH_SPACES` / :func:`register_space`: one search space per method, declared
  as data (:mod:`tfdebias.tuning.spaces`); the backbones' spaces are registered here,
  each method module registers its paper's table beside its model.
* :func:`tune` / ``tfdebias tune METHOD --data NAME --tuner bayesian|random|grid|hyperband
  --max-trials N --dir DIR``: a resumable search whose best trial becomes a normal run
  directory (:mod:`tfdebias.tuning.search`).

Importing this package does not import keras-tuner or TensorFlow; ``tune`` needs the
``tune`` extra (``pip install 'tfdebias[tune]'``).
"""

from tfdebias.tuning.spaces import (  # noqa: F401
    BACKBONE_COMMON,
    CONFIG_KEYS,
    SEARCH_SPACES,
    available,
    declare,
    get_space,
    register_space,
)


def tune(*args, **kwargs):
    """See :func:`tfdebias.tuning.search.tune`."""
    from tfdebias.tuning.search import tune as _tune

    return _tune(*args, **kwargs)


def make_hypermodel(*args, **kwargs):
    """See :func:`tfdebias.tuning.search.make_hypermodel`."""
    from tfdebias.tuning.search import make_hypermodel as _make

    return _make(*args, **kwargs)
