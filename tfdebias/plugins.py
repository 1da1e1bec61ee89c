"""Modules that extend tfdebias' registries, found through package metadata.

The lower layers (models, evaluation protocols, the training engine) look names up in
registries that higher layers fill: each method package registers its models and
protocols when it is imported. Rather than importing the methods themselves, which
would make the lower layers depend on the higher ones, a registry that misses a name
calls :func:`load`, which imports every module declared under the entry-point group
``tfdebias.plugins``. tfdebias declares its own methods there (``setup.cfg``); a
separate package can add its own models, protocols and ``tfdebias reproduce`` entries
the same way::

    [options.entry_points]
    tfdebias.plugins =
        my_method = my_package.my_method
"""

from __future__ import annotations

import importlib
from importlib import metadata

GROUP = "tfdebias.plugins"
_loaded = False


def load() -> None:
    """Import every plugin module once (registering what it declares)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        importlib.import_module(ep.value.split(":")[0])


__all__ = ["GROUP", "load"]
