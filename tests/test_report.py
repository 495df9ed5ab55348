"""The Markdown report: files written, table formatting, robustness to missing inputs."""

from __future__ import annotations

import json
import math
import re
import sys
import warnings
from pathlib import Path

import pytest
from PIL import Image

from vlfuse.report import (
    plot_examples,
    plot_family_accuracy,
    plot_training_curve,
    write_report,
)

FAMILIES = {
    "shape": {"accuracy": 0.9876, "count": 800, "group": "non-relational"},
    "color": {"accuracy": 1.0, "count": 800, "group": "non-relational"},
    "closest": {"accuracy": 0.9125, "count": 800, "group": "binary"},
    "count": {"accuracy": 0.95, "count": 800, "group": "binary"},
    "between": {"accuracy": 0.5, "count": 800, "group": "ternary"},
}
METRICS = {
    "overall": {"accuracy": 0.8700, "count": 4000},
    "groups": {
        "non-relational": {"accuracy": 0.9938, "count": 1600},
        "binary": {"accuracy": 0.93125, "count": 1600},
        "ternary": {"accuracy": 0.5, "count": 800},
    },
    "families": FAMILIES,
}


def _lightning_csv(path: Path, epochs: int = 3, steps_per_epoch: int = 100, every: int = 10) -> Path:
    """A CSVLogger metrics.csv: train rows every `every` steps, one val row per epoch, blank cells."""
    lines = ["epoch,step,train_acc,train_loss,val_acc,val_loss"]
    for epoch in range(epochs):
        for step in range(epoch * steps_per_epoch + every - 1, (epoch + 1) * steps_per_epoch, every):
            loss = 2.0 * math.exp(-step / 120) + 0.05 * ((step * 7919) % 13) / 13
            lines.append(f"{epoch},{step},{1 - loss / 2.5:.4f},{loss:.4f},,")
        last = (epoch + 1) * steps_per_epoch - 1
        lines.append(f"{epoch},{last},,,{0.5 + 0.15 * epoch:.4f},{1.2 - 0.3 * epoch:.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _examples(folder: Path) -> list[dict]:
    colours = ["red", "green", "blue", "yellow", "purple", "gray"]
    questions = [
        "What shape is the red object?",
        "What is the colour of the object closest to the blue square?",
        "How many objects have the same shape as the green one?",
        "红色物体是什么形状？离蓝色正方形最近的物体是什么颜色？",
        "Is the object between the yellow circle and the gray square a rectangle?",
        "What shape is the purple object?",
    ]
    truths = ["circle", "red", "3", "圆形", "no", None]
    predictions = ["circle", "blue", "3", "圆形", "yes", "square"]
    examples = []
    for i, colour in enumerate(colours):
        image = folder / f"img{i}.png"
        Image.new("RGB", (64, 64), colour).save(image)
        examples.append(
            {"image": str(image), "question": questions[i], "prediction": predictions[i],
             "truth": truths[i], "confidence": 0.55 + 0.07 * i}
        )
    return examples


def _assert_png(path: Path, min_side: int = 200) -> None:
    assert path.is_file()
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert min(im.size) >= min_side
        # Non-trivial: more than a blank canvas.
        assert len(im.convert("L").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 10


def _image_links(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_full_report(tmp_path: Path) -> None:
    csv_path = _lightning_csv(tmp_path / "metrics.csv")
    out = tmp_path / "report"
    info = {"model": "cnn + film, 1.2M params", "data": "/data/sort-of-clevr", "wall time": "3m 12s",
            "command": "vlfuse demo --epochs 3"}

    report = write_report(out, title="Sort-of-CLEVR VQA", metrics=METRICS,
                          examples=_examples(tmp_path), metrics_csv=csv_path, info=info)

    assert report == out / "report.md"
    text = report.read_text(encoding="utf-8")
    for name in ("training_curve.png", "family_accuracy.png", "examples.png"):
        _assert_png(out / name)
    assert sorted(_image_links(text)) == ["examples.png", "family_accuracy.png", "training_curve.png"]
    assert text.startswith("# Sort-of-CLEVR VQA")
    for value in info.values():
        assert value in text
    assert "87.0%" in text and "4000" in text
    expected = {"shape": "98.8", "color": "100.0", "closest": "91.2", "count": "95.0", "between": "50.0"}
    for family, pct in expected.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {family} |"))
        assert f"| {pct} |" in row and "| 800 |" in row
    assert re.search(r"\| non-relational \| 99\.4 \| 1600 \|", text)
    assert re.search(r"\| ternary \| 50\.0 \| 800 \|", text)


@pytest.mark.parametrize("content", [None, "", "epoch,step,train_loss,val_acc\n", "epoch,step\n0,9\n"])
def test_no_training_curve(tmp_path: Path, content: str | None) -> None:
    csv_path = tmp_path / "metrics.csv"
    if content is not None:
        csv_path.write_text(content)
    assert plot_training_curve(csv_path, tmp_path / "curve.png") is None
    assert not (tmp_path / "curve.png").exists()

    out = tmp_path / "report"
    report = write_report(out, title="t", metrics=METRICS, examples=[], metrics_csv=csv_path)
    text = report.read_text(encoding="utf-8")
    assert not (out / "training_curve.png").exists()
    assert "training_curve.png" not in text
    for link in _image_links(text):  # every remaining link resolves
        assert (out / link).is_file()


def test_stale_curve_is_not_linked(tmp_path: Path) -> None:
    out = tmp_path / "report"
    write_report(out, title="t", metrics=METRICS, examples=[], metrics_csv=_lightning_csv(tmp_path / "m.csv"))
    assert (out / "training_curve.png").is_file()
    write_report(out, title="t", metrics=METRICS, examples=[], metrics_csv=None)
    assert not (out / "training_curve.png").exists()


def test_training_curve_with_only_some_columns(tmp_path: Path) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,step,val_acc\n0,99,0.4\n1,199,0.6\n")
    assert plot_training_curve(csv_path, tmp_path / "curve.png") == tmp_path / "curve.png"
    _assert_png(tmp_path / "curve.png", min_side=100)


@pytest.mark.parametrize("groups", [None, {}])
def test_metrics_without_groups(tmp_path: Path, groups: dict | None) -> None:
    metrics = {"overall": {"accuracy": 0.42, "count": 100},
               "families": {"yes/no": {"accuracy": 0.5, "count": 50}, "what": {"accuracy": 0.34, "count": 50}}}
    if groups is not None:
        metrics["groups"] = groups
    report = write_report(tmp_path, title="plain VQA", metrics=metrics, examples=_examples(tmp_path)[:2])
    text = report.read_text(encoding="utf-8")
    assert "Accuracy by group" not in text
    assert "42.0%" in text and "| 34.0 |" in text
    _assert_png(tmp_path / "family_accuracy.png", min_side=100)


def test_overall_only(tmp_path: Path) -> None:
    out = plot_family_accuracy({"overall": {"accuracy": 0.9, "count": 10}}, tmp_path / "f.png")
    _assert_png(out, min_side=100)


def test_examples_tolerate_missing_image_and_fields(tmp_path: Path) -> None:
    examples = [{"image": tmp_path / "nope.png", "question": "x" * 200, "prediction": "a", "truth": None,
                 "confidence": None}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # CJK glyph warnings and the like must stay quiet
        out = plot_examples(examples + _examples(tmp_path), tmp_path / "ex.png", columns=3)
    _assert_png(out)
    with pytest.raises(ValueError):
        plot_examples([], tmp_path / "none.png")


def test_import_stays_light() -> None:
    import subprocess

    code = "import sys, vlfuse.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- the demo's report

def test_demo_report_says_when_the_time_cap_cut_training(tmp_path):
    """`vlfuse demo` (its tiny-model version) cut by a tiny safety cap: the report says the model is
    undertrained; running the demo again continues the run to its planned steps and the note goes."""
    from conftest import TINY_OVERRIDES

    from vlfuse.demo import run_demo

    tiny = [o for o in TINY_OVERRIDES if not o.startswith("train.epochs")] + ["train.epochs=1"]
    report = run_demo(tmp_path / "demo", images=16, overrides=[*tiny, "train.max_minutes=0.000001"])
    text = report.read_text(encoding="utf-8")
    run = json.loads((tmp_path / "demo" / "run" / "run.json").read_text(encoding="utf-8"))
    planned = run["planned_steps"]
    assert planned > 1 and run["stopped_by"] == "time cap"
    assert f"stopped by the time cap at step 1 of {planned}: the model is undertrained" in text
    assert f"1 of {planned} steps" in text and "samples/s" in text  # the steps line

    report = run_demo(tmp_path / "demo", images=16, overrides=[*tiny, "train.max_minutes=60"])
    text = report.read_text(encoding="utf-8")
    assert "undertrained" not in text and f"{planned} of {planned} steps" in text


def test_caption_grid_draws_an_unpicked_sample_of_captioned_photos(tmp_path):
    """bench/caption_grid.py (the docs' caption figure) draws from the report's helpers."""
    from bench.caption_grid import plot_caption_grid, read_records, spread

    photo = tmp_path / "p.png"
    Image.new("RGB", (32, 24), (200, 40, 40)).save(photo)
    records = [{"image": str(photo), "caption": f"a red square {i}", "references": ["a red photo"]} for i in range(10)]
    (tmp_path / "eval_captions.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    picked = spread(read_records(tmp_path / "eval_captions.jsonl"), 4)
    assert [r["caption"][-1] for r in picked] == ["0", "2", "4", "6"]
    out = plot_caption_grid(picked, tmp_path / "grid.png")
    assert Image.open(out).size[0] > 0
