"""Task classification (image + text -> one of C classes, hateful memes / MM-IMDb style): the table
fields, the shapes table, metrics on hand-worked examples, a tiny run through the CLI, save -> load
-> same outputs, bad inputs (missing label, unknown label at test time)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error
from conftest import REPO, TINY_TRAIN, tiny_model

CONFIG = REPO / "configs" / "classification_shapes.yaml"

TINY = [
    *tiny_model(fusion="{name: gated}"),
    "data.val=null",
    "data.test={path: classification_train.jsonl}",
    *TINY_TRAIN,
    "train.max_minutes=null",
]


@pytest.fixture(scope="module")
def table_root(shapes_root, tmp_path_factory) -> Path:
    """The tiny shapes data with its classification tables written beside it (a private copy)."""
    from vlfuse.data.shapes_classification import write_tables

    root = Path(shutil.copytree(shapes_root, tmp_path_factory.mktemp("cls") / "shapes"))
    write_tables(root, per_image=2, seed=0)
    return root


def write_config(path: Path, root: Path, out: Path, *extra: str) -> Path:
    import yaml

    from vlfuse.config import load_config, to_dict

    config = load_config(CONFIG, [f"data.root={root}", f"out_dir={out}", *TINY, *extra])
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- data

def test_table_reads_text_and_label_fields(tmp_path):
    from vlfuse.data.formats.jsonl import read_vqa_table

    (tmp_path / "m.png").write_bytes(b"\x89PNG")  # only its existence is checked when reading
    rows = [{"image": "m.png", "text": "look at this", "label": 1, "id": 42},
            {"image": "m.png", "text": "another", "label": "0"},
            {"image": "m.png", "question": "a question", "answer": "yes", "label": "ignored"}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    samples = read_vqa_table(tmp_path / "t.jsonl").samples
    assert [(s.question, s.answer) for s in samples] == [("look at this", "1"), ("another", "0"),
                                                           ("a question", "yes")]
    assert samples[0].extra == {"id": 42}
    (tmp_path / "t.csv").write_text("image,text,label\nm.png,look at this,1\nm.png,unlabelled,\n", encoding="utf-8")
    samples = read_vqa_table(tmp_path / "t.csv").samples
    assert [(s.question, s.answer) for s in samples] == [("look at this", "1"), ("unlabelled", None)]
    from vlfuse.errors import DataError

    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "m.png", "text": "x", "label": [1]}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1 \[label\]"):
        read_vqa_table(tmp_path / "bad.jsonl")


def test_shapes_table_labels_follow_the_scene(table_root):
    from vlfuse.data.shapes_classification import LABELS

    scenes = json.loads((table_root / "scenes" / "train_scenes.json").read_text())["scenes"]
    scenes = {s["file_name"]: s for s in scenes}
    records = [json.loads(line) for line in (table_root / "classification_train.jsonl").read_text().splitlines()]
    assert len(records) == 2 * len(scenes)
    for r in records:
        shape_of = {o["color"]: o["shape"] for o in scenes[Path(r["image"]).name]["objects"]}
        claims = [c.split()[1:] for c in r["text"].split(" and ")]
        holds = [shape_of[colour] == shape for colour, shape in claims]
        assert r["label"] == LABELS[[[True, True], [True, False], [False, True], [False, False]].index(holds)]
        assert (table_root / r["image"]).is_file()


# --------------------------------------------------------------------------- metrics

def test_multiclass_metrics_on_a_hand_worked_example():
    from vlfuse.tasks.labelled.evaluate import labelled_metrics

    classes = ["a", "b", "c"]
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    target = torch.tensor([0, 1, 2, 1])
    m = labelled_metrics(probs, target, classes)
    assert m["accuracy"] == pytest.approx(3 / 4)
    # F1: a = 2/(2+1+0) = 2/3, b = 2/(2+0+1) = 2/3, c = 1
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # one-vs-rest AUROC: a: pos 0.7 vs negs 0.1, 0.2, 0.6 -> 1; b: pos 0.8, 0.3 vs negs 0.2, 0.3 -> (2 + 1 + 0.5)/4;
    # c: pos 0.5 vs 0.1, 0.1, 0.1 -> 1
    assert m["auroc"] == pytest.approx((1 + 3.5 / 4 + 1) / 3)
    assert m["majority_baseline"] == {"class": "b", "accuracy": 0.5} and "consistency" not in m
    # A class missing from the split: AUROC is undefined and said so, the rest is still reported.
    m = labelled_metrics(probs[:2], target[:2], classes)
    assert m["auroc"] is None and "every class" in m["auroc_undefined"] and m["accuracy"] == 1.0


def test_binary_auroc_ranks_by_the_positive_class():
    from vlfuse.tasks.labelled.evaluate import labelled_metrics, positive_class

    assert positive_class(["0", "1"]) == 1 and positive_class(["true", "zz"]) == 0 and positive_class(["n", "p"]) == 1
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])
    m = labelled_metrics(probs, torch.tensor([0, 1, 0, 1]), ["0", "1"])
    # scores for "1": positives 0.6, 0.2; negatives 0.1, 0.7 -> pairs won: (0.6>0.1), (0.2>0.1) = 2 of 4
    assert m["auroc"] == pytest.approx(0.5) and m["accuracy"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- end to end

def test_train_eval_predict_and_reload(table_root, cli_main, tmp_path):
    config = write_config(tmp_path / "cls.yaml", table_root, tmp_path / "run")
    result = cli_main("train", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "macro-F1" in result.stdout and "AUROC" in result.stdout
    out = tmp_path / "run"
    metrics = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert metrics["task"] == "classification" and metrics["classes"] == ["both", "first", "neither", "second"]
    assert metrics["examples"] == 28 and "consistency" not in metrics
    for key in ("accuracy", "macro_f1"):
        assert 0 <= metrics[key] <= 1
    assert metrics["auroc"] is None or 0 <= metrics["auroc"] <= 1
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["classes"] == metrics["classes"] and run["steps"] == 8

    # eval on a table given on the command line
    result = cli_main("eval", out / "model", "--data", table_root / "classification_train.jsonl",
                      "--out", tmp_path / "again.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "again.json").read_text())["accuracy"] == metrics["accuracy"]

    # save -> load -> same outputs: every stored prediction is what the reloaded model says now
    import vlfuse

    predictor = vlfuse.load(out / "model")
    records = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()[:4]]
    for record in records:
        p = predictor.predict(record["image"], record["text"], top_k=4)
        assert p.answer == record["prediction"]
        assert dict(p.top) == pytest.approx(record["probabilities"], abs=1e-5)
    result = cli_main("predict", out / "model", "--image", records[0]["image"], "--question", records[0]["text"])
    assert result.returncode == 0 and result.stdout.splitlines()[0] == records[0]["prediction"]


# --------------------------------------------------------------------------- bad inputs

def test_missing_training_label_is_a_one_line_error(table_root, cli_main, tmp_path):
    rows = (table_root / "classification_train.jsonl").read_text().splitlines()
    broken = json.loads(rows[3])
    del broken["label"]
    (table_root / "classification_bad.jsonl").write_text("\n".join(rows[:3] + [json.dumps(broken)] + rows[4:]))
    config = write_config(tmp_path / "c.yaml", table_root, tmp_path / "run",
                          "data.train={path: classification_bad.jsonl}")
    assert_one_line_error(cli_main("train", config), "classification_bad.jsonl", "[label]", "missing label",
                          "question_id 'line-4'")


def test_unknown_label_at_test_time_is_a_clear_error(table_root, cli_main, tmp_path):
    config = write_config(tmp_path / "c.yaml", table_root, tmp_path / "run", "data.test=null", "train.epochs=1")
    assert cli_main("train", config).returncode == 0
    rows = [json.loads(line) for line in (table_root / "classification_test.jsonl").read_text().splitlines()]
    rows[0]["label"] = "all three"
    (table_root / "classification_typo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli_main("eval", tmp_path / "run" / "model", "--data", table_root / "classification_typo.jsonl")
    line = assert_one_line_error(result, "classification_typo.jsonl", "unknown label 'all three'",
                                 "both, first, neither, second")
    assert "[label]" in line


def test_one_class_is_refused(table_root, cli_main, tmp_path):
    rows = [json.loads(line) for line in (table_root / "classification_train.jsonl").read_text().splitlines()]
    (table_root / "classification_one.jsonl").write_text("".join(json.dumps({**r, "label": "same"}) + "\n"
                                                                      for r in rows))
    config = write_config(tmp_path / "c.yaml", table_root, tmp_path / "run",
                          "data.train={path: classification_one.jsonl}")
    assert_one_line_error(cli_main("train", config), "one.jsonl", "at least 2 classes")
