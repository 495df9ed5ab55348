"""Assertions and readers shared by the test files (imported as `helpers`: pytest puts tests/ on the path)."""

from __future__ import annotations

import json
from pathlib import Path


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def assert_one_line_error(result, *culprits: str) -> str:
    """Exit 2, exactly one non-empty line on stderr, starting 'error:', naming every culprit."""
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, everything
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, everything)
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for culprit in culprits:
        assert culprit in lines[0], f"{culprit!r} not named in: {lines[0]}"
    return lines[0]
