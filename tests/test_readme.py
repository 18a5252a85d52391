"""The README's Python blocks run as written, so the quick start cannot drift from the API."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_readme_has_python():
    assert BLOCKS, "README.md has no ```python block"


@pytest.mark.parametrize("source", BLOCKS, ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(source: str, tmp_path: Path):
    # A fresh directory, so the block's relative paths (runs/...) start empty; PYTHONPATH is inherited.
    result = subprocess.run([sys.executable, "-c", source], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"README block failed:\n{source}\n--- stderr ---\n{result.stderr[-3000:]}"
