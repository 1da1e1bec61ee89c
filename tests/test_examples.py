"""Every script in examples/ runs as a user would run it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs(script, data_dir, tmp_path):
    p = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=900, env={**os.environ, "TFDEBIAS_DATA_DIR": data_dir})
    assert p.returncode == 0, p.stderr[-3000:]
