"""Every docstring example in the library runs and shows what it says it shows."""

import doctest
import importlib
import pkgutil

import pytest

import tfdebias


def _modules():
    # datasets/, tuning/ and export/ are mapped into the package by setup.py (package_dir)
    names = ["tfdebias"]
    for pkg in ("tfdebias", "tfdebias.datasets", "tfdebias.tuning", "tfdebias.export"):
        names.append(pkg)
        for m in pkgutil.walk_packages(importlib.import_module(pkg).__path__, prefix=f"{pkg}."):
            names.append(m.name)
    return sorted(set(names))


MODULES = _modules()


def test_every_module_is_collected():
    assert {"tfdebias.evaluation.evidence", "tfdebias.evaluation.baselines", "tfdebias.models",
            "tfdebias.datasets.synthetic._base", "tfdebias.tuning.search", "tfdebias.export.serving"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, data_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
