"""Task dialogue end to end: the built-in dialogues, the VisDial reader, the model, training and prediction.

Hand-worked scene (size 64, radius 5): distances from red (10, 10): green 10.2, yellow 44, gray 44,
orange 36.1, blue 62.2. Closest to blue (54, 54): orange 27.8.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CROSS_ATTENTION, REPO, tiny_model
from helpers import write_yaml
from vlfuse.data.shapes import Scene, ShapeObject, generate
from vlfuse.data.shapes_dialog import (ANSWERS, NUM_OPTIONS, _ask_property, _State, dialog_caption, fact,
                                       make_dialog)
from vlfuse.errors import ConfigError, DataError

DIALOGUE_CONFIG = REPO / "configs" / "dialogue_shapes.yaml"

TINY = [
    *tiny_model(fusion=CROSS_ATTENTION, head="{name: discriminative, dropout: 0.0}"),
    "dialogue.max_history_length=40",
    "train.progress_bar=false",
    "train.epochs=1",
    "train.batch_images=4",
    "train.warmup_steps=2",
    "train.log_every_n_steps=1",
    "train.accelerator=cpu",
    "train.max_minutes=null",
]


def obj(color: str, shape: str, x: float, y: float) -> ShapeObject:
    return ShapeObject(color, shape, x, y, 5)


SCENE = Scene(64, (obj("red", "circle", 10, 10), obj("green", "square", 20, 12), obj("blue", "triangle", 54, 54),
                   obj("orange", "square", 40, 30), obj("gray", "circle", 10, 54), obj("yellow", "triangle", 54, 10)))


def by_color(color: str) -> ShapeObject:
    return SCENE.obj(color)


def dialogue_config(data_root: Path, out_dir: Path, *extra: str):
    from vlfuse.config import load_config

    return load_config(DIALOGUE_CONFIG, [f"data.root={data_root}", f"out_dir={out_dir}", *TINY, *extra])


# --------------------------------------------------------------------------- the built-in dialogues

@pytest.mark.parametrize("family, color, expected", [
    ("shape", "red", "a circle"),
    ("left", "red", "yes, on the left"),
    ("left", "blue", "no, on the right"),
    ("top", "yellow", "yes, at the top"),
    ("top", "gray", "no, at the bottom"),
    ("place", "green", "at the top left"),
    ("place", "orange", "in the centre"),
    ("place", "blue", "at the bottom right"),
    ("count", "red", "two"),  # red and gray, the subject included
    ("closest", "red", "the green square at the top left"),
    ("closest", "blue", "the orange square in the centre"),
    ("furthest", "red", "the blue triangle at the bottom right"),
    ("closest_shape", "red", "a square"),
])
def test_hand_worked_facts(family, color, expected):
    answer, _ = fact(SCENE, family, by_color(color))
    assert answer == expected and answer in ANSWERS


def test_ambiguous_distances_are_not_asked():
    # green and blue both 20 from red: "the object closest to the red object" names neither.
    tie = Scene(64, (obj("red", "circle", 10, 10), obj("green", "square", 30, 10), obj("blue", "circle", 10, 30),
                     obj("gray", "square", 54, 54)))
    assert fact(tie, "closest", tie.obj("red")) is None and fact(tie, "closest_shape", tie.obj("red")) is None
    assert fact(tie, "furthest", tie.obj("red"))[0] == "the gray square at the bottom right"


def test_caption_gives_counts_only():
    assert dialog_caption(SCENE) == "six shapes: two circles, two squares and two triangles"


class Scripted(random.Random):
    """random.Random whose choice() returns scripted values first (to pick a family and subject)."""

    def __init__(self, *picks):
        super().__init__(0)
        self.picks = list(picks)

    def choice(self, seq):
        return self.picks.pop(0) if self.picks else super().choice(seq)


def test_questions_refer_back_to_the_focus():
    state = _State()
    first = _ask_property(Scripted("shape", by_color("red")), SCENE, state, "explicit")
    assert (first.question, first.answer) == ("what shape is the red object?", "a circle")
    # Ellipsis: the last question again, about a new subject.
    second = _ask_property(Scripted(by_color("green")), SCENE, state, "ellipsis")
    assert (second.question, second.answer) == ("and the green one?", "a square")
    assert state.focus is by_color("green")
    third = _ask_property(Scripted("left"), SCENE, state, "pronoun")
    assert (third.question, third.answer) == ("is it on the left?", "yes, on the left")  # it = green
    # "which object is closest to it?" moves the focus to the object named in the answer.
    state = _State(by_color("blue"), "left")
    fourth = _ask_property(Scripted("closest"), SCENE, state, "pronoun")
    assert fourth.answer == "the orange square in the centre" and state.focus is by_color("orange")
    fifth = _ask_property(Scripted("place"), SCENE, state, "pronoun")
    assert (fifth.question, fifth.answer) == ("where is it?", "in the centre")
    # The brief's example: "what shape is the red object?" / "and the one closest to it?"
    state = _State(by_color("red"), "shape")
    sixth = _ask_property(Scripted("closest_shape"), SCENE, state, "pronoun")
    assert (sixth.question, sixth.answer) == ("and the one closest to it?", "a square")  # green


def test_dialog_rounds_and_candidates():
    for seed in range(20):
        rounds = make_dialog(SCENE, random.Random(seed))
        assert 5 <= len(rounds) <= 10
        assert len({r.question for r in rounds}) == len(rounds)  # nothing asked twice
        for r in rounds:
            assert len(r.options) == NUM_OPTIONS == len(set(r.options))
            assert ANSWERS[r.options[r.gt_index]] == r.answer
    assert make_dialog(SCENE, random.Random(3)) == make_dialog(SCENE, random.Random(3))


# --------------------------------------------------------------------------- files

def _files(root: Path, skip_dialogs: bool = False) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not (skip_dialogs and p.parent.name == "dialog")}


# sha256 over (path, bytes) of every file `generate(images=12, questions_per_image=3, size=32, seed=3)`
# wrote before dialogues existed (generator version 1): adding them must not change one byte.
BEFORE_DIALOGUES = "6940bd6dcacac138c1d3ef9a2bb1cdca765d513ba0a7b5328bc6483d9243942c"


def test_dialogues_leave_every_other_file_unchanged(tmp_path):
    args = {"images": 12, "questions_per_image": 3, "size": 32, "seed": 3, "progress": False}
    generate(tmp_path / "with", **args)
    generate(tmp_path / "again", **args)
    generate(tmp_path / "without", dialogs=False, **args)
    with_dialogs = _files(tmp_path / "with")
    assert _files(tmp_path / "again") == with_dialogs  # deterministic, dialogues included
    assert {"dialog/train.json", "dialog/val.json", "dialog/test.json"} <= with_dialogs.keys()
    assert _files(tmp_path / "with", skip_dialogs=True) == _files(tmp_path / "without")
    digest = hashlib.sha256()
    for name, data in _files(tmp_path / "without").items():
        digest.update(name.encode())
        digest.update(data)
    assert digest.hexdigest() == BEFORE_DIALOGUES


def test_dialogues_are_english_only(tmp_path):
    generate(tmp_path / "zh", images=4, questions_per_image=1, size=32, lang="zh", progress=False)
    assert not (tmp_path / "zh" / "dialog").exists()
    with pytest.raises(ConfigError, match="dialogs"):
        generate(tmp_path / "zh2", images=4, questions_per_image=1, size=32, lang="zh", dialogs=True, progress=False)


def test_visdial_layout(shapes_root):
    doc = json.loads((shapes_root / "dialog" / "train.json").read_text(encoding="utf-8"))
    assert doc["version"] == "1.0" and doc["split"] == "train"
    data = doc["data"]
    assert data["answers"] == ANSWERS and len(data["dialogs"]) == 14
    for dialog in data["dialogs"]:
        assert isinstance(dialog["image_id"], int) and dialog["caption"].startswith("six shapes: ")
        for r in dialog["dialog"]:
            assert data["questions"][r["question"]].endswith("?")
            assert r["answer_options"][r["gt_index"]] == r["answer"] and len(r["answer_options"]) == 100


# --------------------------------------------------------------------------- reader

def test_reader_on_the_generated_layout(shapes_root):
    from vlfuse.data.formats.visdial import read_visdial

    read = read_visdial(shapes_root / "dialog" / "train.json")
    doc = json.loads((shapes_root / "dialog" / "train.json").read_text(encoding="utf-8"))["data"]
    assert read.skipped.count == 0 and len(read.samples) == len(doc["dialogs"])
    sample, raw = read.samples[0], doc["dialogs"][0]
    assert sample.image_path == shapes_root / "images" / "train" / f"train_{raw['image_id']:06d}.png"
    assert sample.image_path.is_file() and sample.caption == raw["caption"] and sample.split == "train"
    for r, raw_round in zip(sample.rounds, raw["dialog"]):
        assert r.question == doc["questions"][raw_round["question"]]
        assert r.answer == doc["answers"][raw_round["answer"]] == r.options[r.gt_index]
        assert r.extra["family"] == raw_round["family"]


def _write(tmp_path: Path, dialogs: list, questions=("is it red?",), answers=("yes", "no")) -> Path:
    path = tmp_path / "dialog" / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "images" / "train").mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "train" / "7.png")
    path.write_text(json.dumps({"version": "1.0", "split": "train", "data": {
        "questions": list(questions), "answers": list(answers), "dialogs": dialogs}}), encoding="utf-8")
    return path


def _round(**changes):
    return {"question": 0, "answer": 1, "answer_options": [0, 1], "gt_index": 1, **changes}


@pytest.mark.parametrize("dialog, field, words", [
    ({"image_id": 7, "caption": "c", "dialog": [_round(gt_index=2)]}, "data.dialogs[0].dialog[0].gt_index",
     "gt_index must be an integer in [0, 2)"),
    ({"image_id": 7, "caption": "c", "dialog": [_round(gt_index=0)]}, "data.dialogs[0].dialog[0].gt_index",
     "not the answer"),
    ({"image_id": 7, "dialog": [_round()]}, "data.dialogs[0].caption", "missing field 'caption'"),
    ({"image_id": 7, "caption": "c", "dialog": [_round(question=5)]}, "data.dialogs[0].dialog[0].question",
     "data.questions"),
    ({"image_id": 7, "caption": "c", "dialog": [{"question": 0, "answer": 1}]},
     "data.dialogs[0].dialog[0].answer_options", "missing field 'answer_options'"),
    ({"image_id": 8, "caption": "c", "dialog": [_round()]}, "data.dialogs[0].image_id", "image not found"),
])
def test_reader_names_the_bad_field(tmp_path, dialog, field, words):
    from vlfuse.data.formats.visdial import read_visdial

    path = _write(tmp_path, [dialog])
    with pytest.raises(DataError) as error:
        read_visdial(path)
    assert str(path) in str(error.value) and f"[{field}]" in str(error.value) and words in str(error.value)
    skipped = read_visdial(path, on_bad_sample="skip")  # under "skip" the dialogue is dropped and counted
    assert skipped.samples == [] and skipped.skipped.count == 1


def test_reader_structure_errors_and_test_style_rounds(tmp_path):
    from vlfuse.data.formats.visdial import read_visdial

    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"version": "1.0", "data": {"questions": [], "answers": []}}), encoding="utf-8")
    with pytest.raises(DataError, match=r"\[data\.dialogs\]: missing field 'dialogs'"):
        read_visdial(path, check_images=False)
    # VisDial's test split: options without answer or gt_index.
    path = _write(tmp_path, [{"image_id": 7, "caption": "c", "dialog": [{"question": 0, "answer_options": [0, 1]}]}])
    sample = read_visdial(path).samples[0]
    assert sample.rounds[0].answer is None and sample.rounds[0].gt_index is None


_scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=6)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["data", "questions", "answers", "dialogs", "dialog", "image_id", "caption", "question",
                     "answer", "answer_options", "gt_index", "split"]), inner, max_size=5), max_leaves=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_json, dialog=_json, raw=st.binary(max_size=64))
def test_reader_fuzz_reads_or_raises_a_data_error(tmp_path, doc, dialog, raw):
    from vlfuse.data.formats.visdial import read_visdial

    structured = {"version": "1.0", "split": "train", "data": {"questions": ["q?"], "answers": ["a", "b"],
                                                                "dialogs": [dialog]}}
    for i, content in enumerate((json.dumps(doc).encode(), json.dumps(structured).encode(), raw)):
        path = tmp_path / f"fuzz{i}.json"
        path.write_bytes(content)
        for policy in ("error", "skip"):
            try:
                read_visdial(path, tmp_path, on_bad_sample=policy, check_images=False)
            except DataError as error:
                assert str(path) in str(error)


def test_inspect_and_no_dialogs_option(shapes_root, tmp_path, cli_main):
    report = cli_main("data", "inspect", DIALOGUE_CONFIG, "--set", f"data.root={shapes_root}", "--split", "train")
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("visdial / train: 14 dialogues") and "problems: none" in report.stdout
    made = cli_main("data", "shapes", tmp_path / "plain", "--images", "4", "--size", "32", "--no-dialogs")
    assert made.returncode == 0 and not (tmp_path / "plain" / "dialog").exists()


def test_long_histories_keep_the_latest_rounds():
    from vlfuse.data.caption_tokens import build_caption_tokenizer
    from vlfuse.data.dialog_dataset import SEPARATOR, encode_history, history_text
    from vlfuse.data.tokenizer import build_tokenizer

    text = history_text("six shapes", [("what shape is the red object?", "a circle"),
                                       ("and the blue one?", "a square")])
    assert text == (f"six shapes {SEPARATOR} what shape is the red object? a circle {SEPARATOR} "
                    "and the blue one? a square")
    words = build_tokenizer([text])
    ids = encode_history(words, [text], 7)[0]
    assert [words.id_to_token(i) for i in ids] == ["and", "the", "blue", "one", "?", "a", "square"]
    wrapped = build_caption_tokenizer([text])  # [BOS] ... [EOS]: the leading special token stays
    tokens = [wrapped.id_to_token(i) for i in encode_history(wrapped, [text], 5)[0]]
    assert tokens == ["[BOS]", "?", "a", "square", "[EOS]"]


# --------------------------------------------------------------------------- model

GENERATIVE = ["dialogue.decoder=generative", "model.decoder={name: transformer, layers: 1, heads: 2, dropout: 0.0}"]


def tiny_model(shapes_root: Path, tmp_path: Path, generative: bool = False):
    from vlfuse.data.caption_tokens import build_caption_tokenizer
    from vlfuse.data.dialog_dataset import DialogDataset, dialogue_texts
    from vlfuse.data.formats.common import SkipLog
    from vlfuse.data.loading import read_split
    from vlfuse.data.tokenizer import build_tokenizer
    from vlfuse.models.factory import build_dialogue_model

    config = dialogue_config(shapes_root, tmp_path / "run", *(GENERATIVE if generative else []))
    samples = read_split(config.data, "train").samples[:3]
    tokenizer = (build_caption_tokenizer if generative else build_tokenizer)(dialogue_texts(samples))
    torch.manual_seed(0)
    model = build_dialogue_model(config, tokenizer.get_vocab_size()).eval()
    # Histories cut at 30 tokens, below the model's 40 positions, so tests can add padding.
    dataset = DialogDataset(samples, tokenizer, 32, config.data.max_question_length, 30, 12, SkipLog("error"),
                            progress=False)
    return config, tokenizer, model, dataset


@pytest.mark.parametrize("generative", [False, True])
def test_history_padding_does_not_change_scores(shapes_root, tmp_path, generative):
    from vlfuse.data.dialog_dataset import collate_dialogs
    from vlfuse.tasks.dialogue.data import score_batch

    _, _, model, dataset = tiny_model(shapes_root, tmp_path, generative)
    with torch.no_grad():
        batch = collate_dialogs([dataset[0], dataset[1]])
        together = score_batch(model, batch)
        rounds = len(dataset[0][1].labels)
        alone = score_batch(model, collate_dialogs([dataset[0]]))
        assert torch.allclose(together[:rounds], alone, atol=1e-5)  # other dialogues' longer histories pad ours
        padded = dict(batch)  # extra padding columns on every text input (answers: up to their 12 positions)
        for key in ("question", "history", "answer"):
            ids, mask = batch[f"{key}_ids"], batch[f"{key}_mask"]
            extra = 12 - ids.shape[1] if key == "answer" else 5
            assert extra > 0
            padded[f"{key}_ids"] = torch.cat([ids, torch.zeros(len(ids), extra, dtype=ids.dtype)], 1)
            padded[f"{key}_mask"] = torch.cat([mask, torch.zeros(len(mask), extra, dtype=torch.bool)], 1)
        assert torch.allclose(score_batch(model, padded), together, atol=1e-5)
    # The history matters: another history gives other scores.
    changed = dict(batch, history_ids=batch["history_ids"].roll(1, 0), history_mask=batch["history_mask"].roll(1, 0))
    assert not torch.allclose(score_batch(model, changed), together)


def test_generative_scores_are_answer_log_likelihoods(shapes_root, tmp_path):
    from vlfuse.data.dialog_dataset import collate_dialogs

    _, _, model, dataset = tiny_model(shapes_root, tmp_path, generative=True)
    batch = collate_dialogs([dataset[0]])
    with torch.no_grad():
        scores = model(*(batch[k] for k in ("images", "question_ids", "question_mask", "history_ids", "history_mask",
                                           "image_index", "answer_ids", "answer_mask", "options")))
        context = model.context(model.encode_images(batch["images"]), batch["question_ids"], batch["question_mask"],
                                batch["history_ids"], batch["history_mask"], batch["image_index"])
        r, c = 1, 7  # by hand: the sum of log p(token t + 1 | tokens <= t) over the answer after BOS
        answer = batch["options"][r, c]
        ids, mask = batch["answer_ids"][answer], batch["answer_mask"][answer]
        n = int(mask.sum())
        logits = model.decoder(context.memory.index_select(torch.tensor([r])), ids[None, : n - 1])[0]
        expected = sum(logits[t].log_softmax(-1)[ids[t + 1]] for t in range(n - 1))
    assert scores[r, c].item() == pytest.approx(float(expected), abs=1e-4) and (scores < 0).all()


def test_gradients_reach_every_part(shapes_root, tmp_path):
    import torch.nn.functional as F

    from vlfuse.data.dialog_dataset import collate_dialogs
    from vlfuse.tasks.dialogue.data import score_batch

    _, _, model, dataset = tiny_model(shapes_root, tmp_path)
    model.train()
    batch = collate_dialogs([dataset[0], dataset[1]])
    scores = score_batch(model, batch)
    assert scores.shape == (len(batch["labels"]), 100)
    F.cross_entropy(scores, batch["labels"]).backward()
    for part in ("image_encoder", "text_encoder", "fusion", "decoder", "segment"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), part


def test_save_load_gives_the_same_scores(shapes_root, tmp_path):
    from vlfuse.data.answers import AnswerVocab
    from vlfuse.data.dialog_dataset import collate_dialogs
    from vlfuse.models.saved import load_model_dir, save_model_dir
    from vlfuse.tasks.dialogue.data import score_batch

    config, tokenizer, model, dataset = tiny_model(shapes_root, tmp_path)
    save_model_dir(tmp_path / "model", model, config, tokenizer, AnswerVocab(["a circle"]))
    assert not list(tmp_path.glob("model/*.pt*")) and (tmp_path / "model" / "model.safetensors").is_file()
    loaded = load_model_dir(tmp_path / "model", task="dialogue").model
    batch = collate_dialogs([dataset[0], dataset[2]])
    with torch.no_grad():
        assert torch.equal(score_batch(loaded, batch), score_batch(model, batch))


def test_ranking_metrics_on_a_hand_example():
    from vlfuse.metrics.ranking import ranking_metrics
    from vlfuse.tasks.dialogue.evaluate import _ranking

    scores = torch.tensor([[0.9, 0.1, 0.5, 0.2, 0.0, 0.3],   # truth 0: rank 1
                           [0.9, 0.1, 0.5, 0.2, 0.0, 0.3],   # truth 2: rank 2
                           [0.9, 0.1, 0.5, 0.2, 0.0, 0.3]])  # truth 4: rank 6
    gt = torch.tensor([0, 2, 4])
    expected = {"mrr": (1 + 1 / 2 + 1 / 6) / 3, "r1": 1 / 3, "r5": 2 / 3, "mean_rank": 3.0}
    got = ranking_metrics(scores, gt, ks=(1, 5))
    assert got == pytest.approx(expected)
    # Rounds of different widths (3 and 6 candidates) ranked together.
    mixed = _ranking([(scores[0], 0), (scores[1], 2), (scores[2], 4), (torch.tensor([0.2, 0.1, 0.3]), 1)])
    assert mixed["rounds"] == 4 and mixed["mean_rank"] == pytest.approx((1 + 2 + 6 + 3) / 4)
    assert mixed["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 6 + 1 / 3) / 4) and "r5" not in mixed


# --------------------------------------------------------------------------- CLI

def test_train_eval_predict_through_the_cli(shapes_root, tmp_path, cli_main):
    out = tmp_path / "run"
    config = write_yaml(tmp_path / "dialogue.yaml", dialogue_config(shapes_root, out))
    result = cli_main("train", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MRR" in result.stdout and "mean rank" in result.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["task"] == "dialogue" and run["steps"] == 4 and run["train"]["dialogs"] == 14
    metrics = json.loads((out / "eval.json").read_text())
    assert metrics["task"] == "dialogue" and metrics["candidates"] == [100]
    assert 0 < metrics["mrr"] <= 1 and 1 <= metrics["mean_rank"] <= 100 and metrics["rounds"] >= 5
    assert set(metrics["families"]) <= {"shape", "left", "top", "place", "count", "closest", "furthest",
                                        "closest_shape", "count_shape", "closer"}

    evaluated = cli_main("eval", out / "model")
    assert evaluated.returncode == 0 and "MRR" in evaluated.stdout
    again = json.loads((out / "eval_test.json").read_text())
    assert again["mrr"] == pytest.approx(metrics["mrr"])  # the saved model scores as the trained one did

    image = next((shapes_root / "images" / "test").glob("*.png"))
    predicted = cli_main("predict", out / "model", "--image", image, "--question", "is it on the left?",
                         "--history", "six shapes: two circles, two squares and two triangles",
                         "--history", "what shape is the red object? a circle",
                         "--candidate", "yes, on the left", "--candidate", "no, on the right")
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.splitlines()
    assert lines[0] in ("yes, on the left", "no, on the right") and len(lines) == 3

    from vlfuse.tasks.dialogue.predict import load_dialogue

    model = load_dialogue(out / "model")
    ranking = model.rank(image, "is it on the left?", history=["six shapes", ("what shape is the red object?",
                                                                              "a circle")])
    assert len(ranking.top) == len(model.answers) and ranking.answer == ranking.top[0][0]
    assert [s for _, s in ranking.top] == sorted((s for _, s in ranking.top), reverse=True)
    empty = cli_main("predict", out / "model", "--image", image, "--question", "  ")
    assert empty.returncode == 2 and "empty question" in empty.stderr


def test_generative_dialogue_through_the_cli(shapes_root, tmp_path, cli_main):
    out = tmp_path / "run"
    config = write_yaml(tmp_path / "dialogue.yaml", dialogue_config(shapes_root, out, *GENERATIVE))
    result = cli_main("train", config)
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((out / "eval.json").read_text())
    assert 0 < metrics["mrr"] <= 1 and metrics["candidates"] == [100]
    image = next((shapes_root / "images" / "test").glob("*.png"))
    predicted = cli_main("predict", out / "model", "--image", image, "--question", "what shape is the red object?",
                         "--top-k", "2")
    assert predicted.returncode == 0, predicted.stderr
    assert "written by the decoder: " in predicted.stdout and len(predicted.stdout.splitlines()) == 4


@pytest.mark.parametrize("name", ["dialogue_shapes.yaml", "dialogue_shapes_generative.yaml"])
def test_shipped_configs_build(name):
    from vlfuse.config import load_config
    from vlfuse.models.factory import build_dialogue_model

    config = load_config(REPO / "configs" / name)
    model = build_dialogue_model(config, vocab_size=64)
    assert config.task == "dialogue" and model.generative == (config.dialogue.decoder == "generative")


def test_bad_configs_name_the_key(shapes_root, tmp_path):
    from vlfuse.tasks import train

    with pytest.raises(ConfigError, match="data.format.*visdial"):
        train(dialogue_config(shapes_root, tmp_path / "a", "data.format=vqa_v2"), progress=False)
    with pytest.raises(ConfigError, match="model.head.name"):
        train(dialogue_config(shapes_root, tmp_path / "b", "model.head={name: classifier}"), progress=False)
    with pytest.raises(ConfigError, match="model.decoder"):
        train(dialogue_config(shapes_root, tmp_path / "c", "dialogue.decoder=generative"), progress=False)
