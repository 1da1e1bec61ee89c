"""The layering of docs/architecture.md, enforced with import-linter (``.importlinter``).

``datasets/``, ``tuning/`` and ``export/`` are installed as sub-packages of tfdebias, so
the check runs on a copy of the sources laid out the way they are installed, in a fresh
process (import-linter finds packages through the import system, and this process has
already imported the real tfdebias).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".importlinter"
INSTALLED_AS = {"datasets": "datasets", "tuning": "tuning", "export": "export"}


def _installed_layout(dst: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dummy_data", "*.md", "*.tsv", "*.bib")
    shutil.copytree(ROOT / "tfdebias", dst / "tfdebias", ignore=ignore)
    for folder, sub in INSTALLED_AS.items():
        shutil.copytree(ROOT / folder, dst / "tfdebias" / sub, ignore=ignore)
    return dst


def _lint(site: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(CONFIG)!r}))")
    return subprocess.run([sys.executable, "-c", code], cwd=site, capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=300)


def test_layers_contract_is_kept(tmp_path):
    result = _lint(_installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, upward", [
    ("layers/mlp.py", "tfdebias.training.engine"),     # a layer reaching the engine
    ("models/base.py", "tfdebias.methods"),           # a registry importing its plugins
    ("datasets/cold_start.py", "tfdebias.data"),       # a builder importing the loader
])
def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path, module, upward):
    site = _installed_layout(tmp_path)
    with open(site / "tfdebias" / module, "a") as f:
        f.write(f"\n\ndef _planted():\n    import {upward}  # noqa: F401\n")
    result = _lint(site)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "is not allowed to import" in result.stdout
