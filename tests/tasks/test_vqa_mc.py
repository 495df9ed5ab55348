"""Task vqa_mc (multiple-choice VQA): the Visual7W reader on the published layout, candidates in the
VQA and JSONL readers, distractors made for data without candidates, score shapes and padding,
metrics on a hand-worked example, bad inputs as one-line errors, and a tiny run through the CLI on
a Visual7W-format sample made from the built-in scenes (train, eval, predict, reload)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import BASE_CONFIG, TINY_OVERRIDES
from helpers import assert_one_line_error

from vlfuse.data.records import VQASample
from vlfuse.errors import DataError

W_WORDS = ("what", "where", "when", "who", "why", "how")


def write_v7w(shapes_root: Path, out: Path) -> Path:
    """dataset_v7w_telling.json in the published layout (one file, every split; images/v7w_<id>.jpg),
    made from the built-in scenes: each question's 3 wrong answers are other answers of its family."""
    from PIL import Image

    (out / "images").mkdir(parents=True)
    annotations = {split: json.loads((shapes_root / "vqa" / f"{split}_annotations.json").read_text())["annotations"]
                   for split in ("train", "val", "test")}
    answers_of: dict[str, list[str]] = {}
    for anns in annotations.values():
        for a in anns:
            answers_of.setdefault(a["question_type"], [])
            if a["multiple_choice_answer"] not in answers_of[a["question_type"]]:
                answers_of[a["question_type"]].append(a["multiple_choice_answer"])
    every = sorted({answer for answers in answers_of.values() for answer in answers})
    rng, images = random.Random(0), {}
    for offset, split in enumerate(("train", "val", "test")):
        questions = json.loads((shapes_root / "vqa" / f"{split}_questions.json").read_text())["questions"]
        answers = {a["question_id"]: a for a in annotations[split]}
        for q in questions:
            image_id = 100000 * offset + q["image_id"]
            if image_id not in images:
                name = f"v7w_{image_id}.jpg"
                Image.open(shapes_root / "images" / split / f"{split}_{q['image_id']:06d}.png").convert("RGB").save(
                    out / "images" / name, quality=95)
                images[image_id] = {"filename": name, "image_id": image_id, "split": split, "qa_pairs": []}
            a = answers[q["question_id"]]
            answer = a["multiple_choice_answer"]
            same = [x for x in answers_of[a["question_type"]] if x != answer]
            others = [x for x in every if x != answer and x not in same]
            wrong = (rng.sample(same, min(3, len(same))) + rng.sample(others, 3))[:3]
            first = q["question"].split()[0].lower()
            images[image_id]["qa_pairs"].append({
                "qa_id": q["question_id"], "image_id": image_id, "question": q["question"], "answer": answer,
                "multiple_choices": wrong, "type": first if first in W_WORDS else "what"})
    path = out / "dataset_v7w_telling.json"
    path.write_text(json.dumps({"images": list(images.values())}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def v7w_root(shapes_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("v7w") / "visual7w-telling"
    write_v7w(shapes_root, root)
    return root


def v7w_overrides(root: Path, out: Path, *extra: str) -> list[str]:
    split = "{path: dataset_v7w_telling.json}"
    return [f"data.root={root}", f"out_dir={out}", "task=vqa_mc", "data.format=v7w", f"data.train={split}",
            f"data.val={split}", f"data.test={split}", *TINY_OVERRIDES, *extra]


def write_config(path: Path, root: Path, out: Path, *extra: str) -> Path:
    import yaml

    from vlfuse.config import load_config, to_dict

    config = load_config(BASE_CONFIG, v7w_overrides(root, out, *extra))
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- readers

def test_v7w_reader_reads_the_published_layout(v7w_root):
    from vlfuse.data.formats.v7w import read_v7w

    path = v7w_root / "dataset_v7w_telling.json"
    doc = json.loads(path.read_text())
    train = read_v7w(path, split="train")
    everything = read_v7w(path)
    assert train.skipped.count == 0 and len(train.samples) == 14 * 4 and len(everything.samples) == 16 * 4
    entry = doc["images"][0]
    pair = entry["qa_pairs"][0]
    sample = train.samples[0]
    assert sample.question_id == pair["qa_id"] and sample.image_id == entry["image_id"]
    assert sample.image_path == v7w_root / "images" / entry["filename"]  # images/ beside the file by default
    assert sample.question == pair["question"] and sample.answer == pair["answer"]
    assert sample.extra["choices"] == (pair["answer"], *pair["multiple_choices"])  # the truth first, as published
    assert sample.question_type == pair["type"] and sample.question_type in W_WORDS
    assert {s.extra["choices"][0] == s.answer for s in everything.samples} == {True}


@pytest.mark.parametrize("change, field, reason", [
    (lambda qa: qa.pop("multiple_choices"), "images[0].qa_pairs[1].multiple_choices", "missing field"),
    (lambda qa: qa.update(multiple_choices=[]), "images[0].qa_pairs[1].multiple_choices", "empty"),
    (lambda qa: qa.update(multiple_choices=[qa["answer"], "x", "y"]), "images[0].qa_pairs[1].multiple_choices",
     "twice"),
    (lambda qa: qa.update(multiple_choices=["x", 3, "y"]), "images[0].qa_pairs[1].multiple_choices", "strings"),
    (lambda qa: qa.update(answer=""), "images[0].qa_pairs[1].answer", "empty answer"),
    (lambda qa: qa.update(image_id=-5), "images[0].qa_pairs[1].image_id", "differs"),
])
def test_v7w_reader_names_file_and_field_of_bad_input(v7w_root, tmp_path, change, field, reason):
    from vlfuse.data.formats.v7w import read_v7w

    doc = json.loads((v7w_root / "dataset_v7w_telling.json").read_text())
    change(doc["images"][0]["qa_pairs"][1])
    path = tmp_path / "dataset_v7w_telling.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError) as caught:
        read_v7w(path, v7w_root / "images")
    assert str(path) in str(caught.value) and f"[{field}]" in str(caught.value) and reason in str(caught.value)
    kept = read_v7w(path, v7w_root / "images", on_bad_sample="skip")  # skip: that question alone is lost
    assert kept.skipped.count == 1 and len(kept.samples) == 16 * 4 - 1


def test_vqa_multiple_choice_questions_keep_their_candidates(tmp_path):
    from vlfuse.data.formats.vqav2 import read_vqa_v2

    questions = {"data_subtype": "val2014", "questions": [
        {"question_id": 1, "image_id": 7, "question": "What colour?", "multiple_choices": ["red", "blue", "two"]},
        {"question_id": 2, "image_id": 7, "question": "How many?", "multiple_choices": ["one", "two", "red"]}]}
    annotations = {"annotations": [
        {"question_id": 1, "image_id": 7, "multiple_choice_answer": "blue", "answers": [{"answer": "blue"}] * 10},
        {"question_id": 2, "image_id": 7, "multiple_choice_answer": "three", "answers": [{"answer": "three"}] * 10}]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    read = read_vqa_v2(tmp_path / "q.json", tmp_path / "a.json", tmp_path, on_bad_sample="skip", check_images=False)
    assert [s.extra["choices"] for s in read.samples] == [("red", "blue", "two")]
    assert read.skipped.count == 1
    assert "q.json [questions[1].multiple_choices]" in str(read.skipped.skipped[0])
    assert "'three' is not among" in str(read.skipped.skipped[0])


def test_jsonl_and_csv_tables_carry_choices(tmp_path):
    from vlfuse.data.formats.jsonl import read_vqa_table

    rows = [{"image": "a.png", "question": "Colour?", "choices": ["red", "blue"], "answer": "blue"},
            {"image": "a.png", "question": "Shape?", "choices": ["circle", "square"], "answer": "star"}]
    (tmp_path / "mc.jsonl").write_text("\n".join(map(json.dumps, rows)))
    read = read_vqa_table(tmp_path / "mc.jsonl", on_bad_sample="skip", check_images=False)
    assert [s.extra["choices"] for s in read.samples] == [("red", "blue")]
    assert str(read.skipped.skipped[0]).startswith(f"{tmp_path / 'mc.jsonl'}:2 [choices]: the answer 'star'")
    (tmp_path / "mc.csv").write_text("image,question,choices,answer\na.png,Colour?,red|blue|green,green\n")
    assert read_vqa_table(tmp_path / "mc.csv", check_images=False).samples[0].extra["choices"] == \
        ("red", "blue", "green")


# --------------------------------------------------------------------------- candidates made for plain VQA data

def sample(qid, answer, qtype="unknown", atype="unknown", choices=None) -> VQASample:
    return VQASample(qid, 0, Path("x.png"), "q?", answer, question_type=qtype, answer_type=atype,
                     extra={} if choices is None else {"choices": choices})


def test_distractors_come_from_the_same_question_type_first():
    from vlfuse.tasks.vqa_mc.data import ordered_choices, with_choices

    samples = [sample(1, "red", "colour", "other"), sample(2, "blue", "colour", "other"),
               sample(3, "green", "colour", "other"), sample(4, "gray", "colour", "other"),
               sample(5, "circle", "shape", "other"), sample(6, "square", "shape", "other"),
               sample(7, "yes", "left", "yes/no"), sample(8, "no", "left", "yes/no"),
               sample(9, None), sample(10, None, choices=("a", "b"))]
    made, dropped = with_choices(samples, 4)
    assert dropped == 1 and [s.question_id for s in made] == [1, 2, 3, 4, 5, 6, 7, 8, 10]
    by_id = {s.question_id: s.extra["choices"] for s in made}
    assert by_id[1][0] == "red" and set(by_id[1]) == {"red", "blue", "green", "gray"}  # every other colour
    assert set(by_id[5][:2]) == {"circle", "square"} and len(set(by_id[5])) == 4  # then other answers of its type
    assert "no" in by_id[7] and len(set(by_id[7])) == 4
    assert by_id[10] == ("a", "b")  # the data's own candidates are kept
    assert with_choices(samples, 4)[0] == made  # deterministic
    assert len(with_choices(samples, 2)[0][0].extra["choices"]) == 2
    choices, truth = ordered_choices(made[0])
    assert sorted(choices) == sorted(by_id[1]) and choices[truth] == "red"


# --------------------------------------------------------------------------- scores and metrics

def test_scores_are_per_question_with_padding_masked(tiny_config, shapes_root, tmp_path):
    from vlfuse.heads.dialogue import PAD_SCORE
    from vlfuse.tasks.vqa_mc.data import build_pair_tokenizer, collate_mc, encode_pairs
    from vlfuse.models.factory import build_mc_model

    config = tiny_config(shapes_root, tmp_path, "task=vqa_mc")
    tokenizer = build_pair_tokenizer(["what colour is the circle", "red blue green square"])
    assert encode_pairs(tokenizer, ["what colour"], ["red"], 32)[0] == [
        tokenizer.token_to_id("what"), tokenizer.token_to_id("colour"), tokenizer.token_to_id("[SEP]"),
        tokenizer.token_to_id("red")]

    class Group:  # what MCDataset hands collate_mc: two questions, 3 and 2 candidates
        def __init__(self, texts, labels):
            self.token_ids = [encode_pairs(tokenizer, [q] * len(c), c, 32) for q, c in texts]
            self.labels, self.samples = labels, [None] * len(labels)

    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    wide = Group([("what colour is the circle", ["red", "blue", "green square"])], [2])
    narrow = Group([("what colour", ["red", "blue"])], [0])
    batch = collate_mc([(images[0], wide, [None]), (images[1], narrow, [None])], with_samples=False)
    assert batch["choice_index"].tolist() == [[0, 1, 2], [3, 4, -1]] and batch["image_index"].tolist() == [0, 0, 0, 1, 1]
    model = build_mc_model(config, tokenizer.get_vocab_size()).eval()
    with torch.no_grad():
        scores, logits = model.choice_scores(*(batch[k] for k in ("images", "input_ids", "attention_mask",
                                                                  "image_index", "choice_index")))
        alone = collate_mc([(images[1], narrow, [None])], with_samples=False)
        narrow_alone, _ = model.choice_scores(*(alone[k] for k in ("images", "input_ids", "attention_mask",
                                                                   "image_index", "choice_index")))
    assert scores.shape == (2, 3) and logits.shape == (5, 2)
    assert scores[1, 2] == PAD_SCORE and scores.argmax(-1)[1] < 2
    # a question's scores do not depend on the longer texts or wider questions it is batched with
    assert torch.allclose(scores[1, :2], narrow_alone[0], atol=1e-5)


def test_match_targets_mark_each_true_candidate():
    from vlfuse.tasks.vqa_mc.module import match_targets

    choice_index = torch.tensor([[0, 1, 2], [3, 4, -1], [5, 6, -1]])
    labels = torch.tensor([2, 0, -100])  # the third question has no answer: its rows are ignored
    assert match_targets(choice_index, labels, 7).tolist() == [0, 0, 1, 1, 0, -100, -100]


def test_metrics_on_a_hand_worked_example():
    from vlfuse.heads.dialogue import PAD_SCORE
    from vlfuse.tasks.vqa_mc.evaluate import mc_metrics
    from vlfuse.tasks.vqa_mc.report import format_vqa_mc_metrics as format_metrics

    scores = [torch.tensor([0.1, 0.9, 0.0, -1.0]),  # picks 1, truth 1: right
              torch.tensor([2.0, 1.0, 0.5, 0.0]),  # picks 0, truth 3: wrong
              torch.tensor([0.3, 0.3, 0.1, 0.0]),  # a tie goes to the first: picks 0, truth 1: wrong
              torch.tensor([-1.0, 4.0])]  # two candidates: picks 1, truth 1: right
    metrics = mc_metrics(scores, [1, 3, 1, 1], ["what", "what", "why", "why"])
    assert metrics["questions"] == 4 and metrics["accuracy"] == 0.5 and metrics["choices"] == [2, 4]
    assert metrics["chance"] == pytest.approx((0.25 * 3 + 0.5) / 4)
    assert metrics["families"] == {"what": {"accuracy": 0.5, "count": 2}, "why": {"accuracy": 0.5, "count": 2}}
    text = format_metrics({"task": "vqa_mc", **metrics})
    assert "accuracy   50.00%   (chance 31.25%)" in text and "why" in text
    assert PAD_SCORE < -1e8  # padding can never win


# --------------------------------------------------------------------------- end to end

def test_train_eval_predict_reload_on_a_v7w_sample(v7w_root, cli_main, tmp_path):
    config = write_config(tmp_path / "mc.yaml", v7w_root, tmp_path / "run")
    result = cli_main("train", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "multiple-choice VQA: 4 questions, 4 candidates each" in result.stdout and "(chance 25.00%)" in result.stdout
    out = tmp_path / "run"
    metrics = json.loads((out / "eval.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert metrics["task"] == "vqa_mc" and metrics["overall"]["count"] == 4 and metrics["chance"] == 0.25
    assert run["steps"] == 8 and run["train"]["questions"] == 56 and run["train"]["choices"] == [4]
    logged = (out / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_loss", "train_choice_loss", "train_match_loss", "train_acc", "val_acc"} <= set(logged)
    records = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert sum(r["correct"] for r in records) / 4 == metrics["accuracy"]
    assert all(r["prediction"] == r["choices"][max(range(4), key=lambda i: (r["scores"][i], -i))] for r in records)

    # reload: the Python face and the CLI pick what evaluation picked, with the same scores
    import vlfuse

    chooser = vlfuse.load(out / "model")
    for r in records:
        choice = chooser.choose(r["image"], r["question"], r["choices"])
        assert [s for _, s, _ in sorted(choice.ranked, key=lambda x: r["choices"].index(x[0]))] == \
            pytest.approx(r["scores"], abs=1e-3)
        first, second = sorted(r["scores"])[-2:][::-1]
        assert choice.answer == r["prediction"] or first - second < 1e-3  # a near tie may break either way
        assert sum(p for *_, p in choice.ranked) == pytest.approx(1.0)
    r = records[0]
    shown = cli_main("predict", out / "model", "--image", r["image"], "--question", r["question"],
                     "--choices", "|".join(r["choices"]))
    assert shown.returncode == 0 and shown.stdout.splitlines()[0] == r["prediction"]
    assert len(shown.stdout.splitlines()) == 5
    assert_one_line_error(cli_main("predict", out / "model", "--image", r["image"], "--question", "q?",
                                   "--choices", "red"), "at least two candidates")


def test_bad_v7w_file_stops_training_with_one_line(v7w_root, cli_main, tmp_path):
    doc = json.loads((v7w_root / "dataset_v7w_telling.json").read_text())
    del doc["images"][2]["qa_pairs"][0]["answer"]
    (v7w_root / "broken.json").write_text(json.dumps(doc))
    config = write_config(tmp_path / "mc.yaml", v7w_root, tmp_path / "run", "data.on_bad_sample=error",
                          "data.train={path: broken.json}")
    assert_one_line_error(cli_main("train", config), "broken.json", "[images[2].qa_pairs[0].answer]",
                          "missing field 'answer'")


def test_config_checks_vqa_mc_keys():
    from vlfuse.config import load_config
    from vlfuse.errors import ConfigError
    from vlfuse.models.factory import build_mc_model

    with pytest.raises(ConfigError, match="'vqa_mc.num_choices' must be >= 2"):
        load_config(None, ["task=vqa_mc", "vqa_mc.num_choices=1"])
    with pytest.raises(ConfigError, match="model.head.name' must be one of itm, classifier"):
        build_mc_model(load_config(None, ["task=vqa_mc", "model.head={name: dual_encoder}"]), 10)


def test_shipped_configs_load():
    from vlfuse.config import load_config

    shapes = load_config(BASE_CONFIG.parent / "vqa_mc_shapes.yaml")
    v7w = load_config(BASE_CONFIG.parent / "vqa_mc_v7w.yaml")
    assert shapes.task == v7w.task == "vqa_mc" and shapes.model.head["name"] == v7w.model.head["name"] == "itm"
    assert v7w.data.format == "v7w" and v7w.data.test.path == "dataset_v7w_telling.json"
