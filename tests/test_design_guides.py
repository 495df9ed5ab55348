"""docs/design.md's three guides, followed step by step on a copy of the source tree: add a fusion, a
task and a data format, then train each for a few steps through the CLI and use the result."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, SRC, cli_env, tiny_overrides

GUIDE = REPO / "docs" / "design.md"


@pytest.fixture
def source(tmp_path) -> Path:
    """A private copy of src/ to change as the guide says; the CLI runs from it."""
    copy = tmp_path / "src"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return copy


def insert_after(path: Path, anchor: str, text: str) -> None:
    """Add `text` on the line after the one holding `anchor` (which must occur exactly once)."""
    source = path.read_text(encoding="utf-8")
    assert source.count(anchor) == 1, f"{anchor!r} in {path.name}"
    line_end = source.index("\n", source.index(anchor)) + 1
    path.write_text(source[:line_end] + text + "\n" + source[line_end:], encoding="utf-8")


def add_literal(path: Path, field: str, name: str) -> None:
    """Add `name` to the Literal of config field `field` (`task: Literal["vqa", ...]`)."""
    source = path.read_text(encoding="utf-8")
    pattern = re.compile(rf"(\n    {field}: Literal\[)")
    assert len(pattern.findall(source)) == 1, field
    path.write_text(pattern.sub(rf'\1"{name}", ', source), encoding="utf-8")


def vlfuse(source: Path, *args) -> subprocess.CompletedProcess:
    env = {**cli_env(), "PYTHONPATH": str(source)}
    result = subprocess.run([sys.executable, "-m", "vlfuse.cli", *map(str, args)], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def train_tiny(source: Path, shapes_root: Path, out: Path, *extra: str) -> Path:
    """configs/vqa_shapes.yaml at the tests' tiny size, one epoch, through the copied source's CLI."""
    overrides = [o for o in tiny_overrides(shapes_root, out, *extra) if not o.startswith("train.epochs")]
    args = [x for o in [*overrides, "train.epochs=1"] for x in ("--set", o)]
    vlfuse(source, "train", REPO / "configs" / "vqa_shapes.yaml", *args)
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["steps"] > 0 and run["stopped_by"] is None
    return out / "model"


def guide_code(section: str) -> str:
    """The Python block of one section of docs/design.md."""
    text = GUIDE.read_text(encoding="utf-8").split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return textwrap.dedent(re.search(r"```python\n(.*?)```", text, re.S).group(1))


def test_add_a_fusion(source, shapes_root, tmp_path):
    """Step 1: the guide's own class in fusion/gated_sum.py; step 2: one import and one table row; step 3:
    train it by name; then the model answers a question."""
    module = source / "vlfuse" / "fusion" / "gated_sum.py"
    module.write_text("import torch\nfrom torch import nn\n\nfrom ..types import FusionOutput\n\n\n"
                      + guide_code("Add a fusion"), encoding="utf-8")
    factory = source / "vlfuse" / "models" / "factory.py"
    insert_after(factory, "from ..fusion.concat import ConcatFusion", "from ..fusion.gated_sum import GatedSum")
    insert_after(factory, '"concat": ConcatFusion,', '    "gated_sum": GatedSum,')

    model = train_tiny(source, shapes_root, tmp_path / "run", "model.fusion={name: gated_sum}")
    assert "gated_sum" in (model / "config.yaml").read_text(encoding="utf-8")
    image = next((shapes_root / "images" / "test").iterdir())
    answer = vlfuse(source, "predict", model, "--image", image, "--question", "What is the shape of the red object?")
    assert answer.stdout.strip()


def test_add_a_task(source, shapes_root, tmp_path):
    """A task `brief`: VQA's data, model and evaluation with its own metrics line, registered as the guide says."""
    package = source / "vlfuse" / "tasks" / "brief"
    package.mkdir()
    (package / "report.py").write_text(textwrap.dedent('''
        def format_brief_metrics(metrics: dict) -> str:
            overall = metrics["overall"]
            return f"brief: {100 * overall['accuracy']:.1f}% of {overall['count']} questions"
        '''), encoding="utf-8")
    (package / "__init__.py").write_text(textwrap.dedent('''
        """Task brief: VQA, reported in one line."""
        from ..base import Task
        from ..vqa.evaluate import evaluate_vqa_split
        from ..vqa.module import prepare_vqa
        from .report import format_brief_metrics

        TASK = Task("brief", prepare_vqa, evaluate_vqa_split, format_brief_metrics)
        '''), encoding="utf-8")
    tasks = source / "vlfuse" / "tasks" / "__init__.py"
    insert_after(tasks, "from .base import Task", "from . import brief")
    insert_after(tasks, '"vqa": vqa.TASK,', '    "brief": brief.TASK,')
    add_literal(source / "vlfuse" / "config.py", "task", "brief")
    saved = source / "vlfuse" / "models" / "saved.py"
    saved.write_text(saved.read_text(encoding="utf-8").replace('ANSWER_TASKS = ("vqa",', 'ANSWER_TASKS = ("vqa", "brief",'),
                     encoding="utf-8")

    model = train_tiny(source, shapes_root, tmp_path / "run", "task=brief")
    evaluated = vlfuse(source, "eval", model, "--split", "test")
    assert re.search(r"brief: \d+\.\d% of \d+ questions", evaluated.stdout), evaluated.stdout


TSV_READER = '''
"""Tab-separated questions: one `image<TAB>question<TAB>answer` per line, images relative to `images`."""

from pathlib import Path

from ...errors import DataError
from ..records import VQASample
from .common import ReadResult, SkipLog
from .fields import Where, image_file


def read_tsv(path, image_dir=None, *, on_bad_sample="error") -> ReadResult:
    skipped, samples = SkipLog(on_bad_sample), []
    path = Path(path)
    folder = Path(image_dir) if image_dir is not None else path.parent
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where = Where(path, number)
        try:
            fields = line.split("\\t")
            if len(fields) != 3:
                raise where.error(f"expected 3 tab-separated fields, found {len(fields)}")
            image, question, answer = fields
            samples.append(VQASample(question_id=number, image_id=image, question=question, answer=answer,
                                     answers=(answer,), image_path=image_file(folder / image, where, True)))
        except DataError as error:  # skipped and counted, or raised, as data.on_bad_sample says
            skipped.add(error)
    return ReadResult(samples, skipped)
'''


def write_tsv(shapes_root: Path, split: str, out: Path) -> Path:
    """The built-in split's questions as a TSV table, plus one bad line."""
    questions = json.loads((shapes_root / "vqa" / f"{split}_questions.json").read_text())["questions"]
    answers = {a["question_id"]: a["multiple_choice_answer"]
               for a in json.loads((shapes_root / "vqa" / f"{split}_annotations.json").read_text())["annotations"]}
    files = {int(p.stem.rsplit("_", 1)[1]): p.name for p in (shapes_root / "images" / split).iterdir()}
    rows = [f"{split}/{files[q['image_id']]}\t{q['question']}\t{answers[q['question_id']]}" for q in questions]
    out.write_text("\n".join(rows + ["a line without tabs"]) + "\n", encoding="utf-8")
    return out


def test_add_a_data_format(source, shapes_root, tmp_path):
    """A format `tsv`: the reader module, one row in READERS, the name in DataConfig.format; train on it."""
    (source / "vlfuse" / "data" / "formats" / "tsv.py").write_text(TSV_READER, encoding="utf-8")
    loading = source / "vlfuse" / "data" / "loading.py"
    insert_after(loading, "from .formats.common import ReadResult", "from .formats import tsv")
    insert_after(loading, '"jsonl": FormatReader(', '    "tsv": FormatReader(tsv, tsv.read_tsv, ("path",)),')
    add_literal(source / "vlfuse" / "config.py", "format", "tsv")
    for split in ("train", "val", "test"):
        write_tsv(shapes_root, split, tmp_path / f"{split}.tsv")

    images = shapes_root / "images"
    splits = [f"data.{s}={{path: {tmp_path / f'{s}.tsv'}, images: {images}}}" for s in ("train", "val", "test")]
    model = train_tiny(source, shapes_root, tmp_path / "run", "data.format=tsv", *splits)
    run = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    assert run["train"]["skipped"]["count"] == 1  # the bad line, counted and named
    assert (model / "answers.json").is_file()
