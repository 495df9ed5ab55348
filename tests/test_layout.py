"""The source tree's shape, checked by `python -m tools.layout` (cycles, private names, importlib, size)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `tools` sits at the repository root, beside src/

from tools import layout  # noqa: E402

@pytest.fixture(scope="module")
def report() -> layout.Report:
    return layout.check()


def test_the_source_tree_keeps_its_shape(report):
    assert [str(f) for f in report.findings] == []
    assert report.ok and report.largest is not None and 10 < report.largest[3] < 80


def test_the_checker_runs_as_a_module_and_prints_its_verdict(report):
    result = subprocess.run([sys.executable, "-m", "tools.layout"], cwd=REPO, capture_output=True, text=True)
    assert "import cycles:" in result.stdout and "largest function:" in result.stdout
    assert f"largest function: {report.largest[2]} " in result.stdout
    assert result.returncode == 0 and result.stdout.rstrip().endswith(": ok")


def _package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "fakepkg"
    for name, text in {"__init__.py": "", **files}.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(textwrap.dedent(text))
    return pkg


def test_a_clean_fake_package_passes(tmp_path):
    pkg = _package(tmp_path, {"a.py": "from .b import value\n", "b.py": "value = 1\n"})
    report = layout.check(pkg)
    assert report.ok and report.cycles == []
    assert layout.main(["--root", str(pkg)]) == 0


def test_a_cycle_is_reported_as_a_chain_even_through_a_function_level_import(tmp_path):
    pkg = _package(tmp_path, {
        "a.py": "from .b import g\n",
        "b.py": "def g():\n    from fakepkg.c import h\n    return h\n",
        "c.py": "from . import a\n",
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import g\n",
    })
    report = layout.check(pkg)
    assert report.cycles == [["fakepkg.a", "fakepkg.b", "fakepkg.c", "fakepkg.a"]]
    assert [f.rule for f in report.findings] == ["cycles"]
    assert layout.main(["--root", str(pkg)]) == 1


def test_private_names_and_private_modules_are_caught(tmp_path):
    pkg = _package(tmp_path, {
        "a.py": "_SECRET = 1\n",
        "b.py": "from .a import _SECRET\n",
        "c.py": "from . import a\nx = a._SECRET\n",
        "sub/__init__.py": "",
        "sub/_impl.py": "def f():\n    return 1\n",
        "sub/ok.py": "from ._impl import f\n",  # inside its own package: fine
        "d.py": "from .sub._impl import f\n",
    })
    messages = sorted((f.path, f.message) for f in layout.check(pkg).by_rule("private"))
    assert messages == [
        ("fakepkg/b.py", "imports private name _SECRET from fakepkg.a"),
        ("fakepkg/c.py", "reaches private name _SECRET of fakepkg.a"),
        ("fakepkg/d.py", "imports private module fakepkg.sub._impl"),
    ]


def test_importlib_lookups_are_caught(tmp_path):
    pkg = _package(tmp_path, {
        "a.py": "import importlib\nm = importlib.import_module('json')\n",
        "b.py": "from importlib import import_module as load\nm = load('json')\n",
        "c.py": "from importlib import resources\n",  # reading package data is fine
    })
    assert sorted(f.path for f in layout.check(pkg).by_rule("importlib")) == ["fakepkg/a.py", "fakepkg/b.py"]


def test_a_long_function_is_caught_and_the_largest_is_named(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(85))
    pkg = _package(tmp_path, {"a.py": f"class K:\n    def long(self):\n    {body.replace(chr(10) + '    ', chr(10) + '        ')}\n"
                                      "def short():\n    return 1\n"})
    report = layout.check(pkg)
    (finding,) = report.by_rule("size")
    assert finding.path == "fakepkg/a.py" and "K.long" in finding.message
    assert report.largest[2] == "K.long" and report.largest[3] >= 80
    assert layout.check(pkg, max_lines=200).ok


def test_a_directory_without_init_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        layout.main(["--root", str(tmp_path)])
    assert "not a package directory" in capsys.readouterr().err
