"""The README's fusion-from-Python example runs as printed (for every fusion in the table)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_fusion_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    example = next(b for b in blocks if "FUSIONS" in b)
    exec(compile(example, str(README), "exec"), {})
    from vlfuse.models.factory import FUSIONS

    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(FUSIONS) - 1  # all but mmbt
    assert all("pooled (2, 128)" in line for line in printed)
