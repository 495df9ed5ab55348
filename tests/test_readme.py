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


def _commands(path: Path) -> set[str]:
    """Every command a README tells a user to run: code-block lines and inline code starting with one."""
    text = path.read_text(encoding="utf-8")
    starts = ("vlfuse ", "./start.sh", "python -m ", "pip install")
    lines = [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return {c.split("  #")[0].strip() for c in lines + inline if c.startswith(starts)}


def test_the_chinese_readme_names_the_same_commands():
    english = _commands(README)
    assert len(english) >= 10  # the quick start, one command per task, development
    assert _commands(README.with_name("README.zh-CN.md")) == english


def test_every_config_the_readmes_name_exists_and_loads():
    from vlfuse.config import load_config

    named = set()
    for readme in (README, README.with_name("README.zh-CN.md")):
        named |= set(re.findall(r"\b(configs/[\w/.-]+\.yaml)\b", readme.read_text(encoding="utf-8")))
    assert len(named) >= 10
    for path in sorted(named):
        assert load_config(README.parent / path).task, path
