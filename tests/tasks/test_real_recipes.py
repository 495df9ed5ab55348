"""The real-photo VQA and classification recipes: VQA soft-score targets and loss, early stopping on val
(best weights exported), per-class accuracy, the answer-prior baselines, COCO-instance questions,
classification on cached features and its compare leaderboard; real-data checks skip without ../shared/data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TinyFrozenEncoder, assert_one_line_error
from conftest import REPO, SHARED_DATA


def shared_data(*parts: str) -> Path:
    """../shared/data beside the checkout (CI), or beside the folder of worktrees that holds it."""
    if SHARED_DATA.joinpath(*parts).exists():
        return SHARED_DATA.joinpath(*parts)
    pytest.skip(f"shared real data {'/'.join(parts)} not found beside {REPO} (only in the dev/CI checkout)")


# --------------------------------------------------------------------------- soft scores and their loss

def test_soft_targets_follow_vqa_v2_min_one_n_over_three():
    from vlfuse.data.answers import AnswerVocab

    vocab = AnswerVocab(["2", "3", "yes"])
    ten = ["2"] * 4 + ["3"] * 2 + ["Yes"] + ["four"] * 3  # "four" is no class
    assert vocab.soft_targets(ten, "2") == [(0, 1.0), (1, pytest.approx(2 / 3)), (2, pytest.approx(1 / 3))]
    assert vocab.soft_targets([], "3") == [(1, 1.0)]  # a single answer scores 1.0
    assert vocab.soft_targets(["yes"], None) == [(2, 1.0)]
    assert vocab.soft_targets(["four", "five"], "four") == []  # nothing to aim at


def test_collated_soft_targets_land_on_each_questions_batch_row():
    from vlfuse.data.vqa_dataset import ImageGroup, collate_groups
    from vlfuse.losses.soft_score import dense_soft_targets

    a = ImageGroup(Path("a"), samples=[None], token_ids=[[1]], labels=[0], soft_targets=[[(0, 1.0)]])
    b = ImageGroup(Path("b"), samples=[None, None], token_ids=[[1], [2, 3]], labels=[1, 2],
                   soft_targets=[[(1, 1.0), (2, 1 / 3)], [(2, 2 / 3)]])
    batch = collate_groups([(torch.zeros(3, 2, 2), a), (torch.zeros(3, 2, 2), b)], with_samples=False)
    dense = dense_soft_targets(batch["soft_targets"], (3, 4))
    expected = torch.tensor([[1, 0, 0, 0], [0, 1, 1 / 3, 0], [0, 0, 2 / 3, 0]], dtype=torch.float)
    assert torch.allclose(dense, expected)
    with pytest.raises(ValueError, match="out of range"):
        dense_soft_targets(batch["soft_targets"], (2, 4))


def test_soft_score_bce_sums_over_answers_and_averages_over_questions():
    from vlfuse.losses.soft_score import SoftScoreBCE, soft_score_bce

    logits = torch.tensor([[2.0, -1.0, 0.0], [0.5, 0.5, -3.0]])
    targets = torch.tensor([[1.0, 0.0, 1 / 3], [0.0, 2 / 3, 0.0]])
    by_hand = sum(-(t * math.log(1 / (1 + math.exp(-x))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-x))))
                  for row_x, row_t in zip(logits.tolist(), targets.tolist()) for x, t in zip(row_x, row_t)) / 2
    assert soft_score_bce(logits, targets).item() == pytest.approx(by_hand, rel=1e-5)
    assert SoftScoreBCE()(logits, targets).item() == pytest.approx(by_hand, rel=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        soft_score_bce(logits, targets[:, :2])


def test_the_head_says_which_loss_and_a_wrong_one_names_the_key():
    from vlfuse.config import load_config
    from vlfuse.errors import ConfigError
    from vlfuse.models.factory import HEADS, build_component

    head = build_component(HEADS, {"name": "classifier", "loss": "soft_bce"}, "model.head", dim=8, num_classes=3)
    assert head.loss == "soft_bce"
    assert torch.allclose(head.mlp[-1].bias, torch.full((3,), -math.log(2)))  # every sigmoid starts near 1/3
    with pytest.raises(ConfigError, match="model.head.loss"):
        build_component(HEADS, {"name": "classifier", "loss": "hinge"}, "model.head", dim=8, num_classes=3)
    with pytest.raises(ConfigError, match="train.early_stopping.mode"):
        load_config(None, ["train.early_stopping={patience: 2, mode: up}"])


# --------------------------------------------------------------------------- metrics

def test_per_class_accuracy_is_each_classes_recall():
    from vlfuse.metrics.classification import per_class_accuracy

    target = [0, 0, 0, 1, 1, 2]
    preds = [0, 0, 1, 1, 0, 0]
    assert per_class_accuracy(preds, target, 4) == [pytest.approx(2 / 3), 0.5, 0.0, None]
    scores = torch.nn.functional.one_hot(torch.tensor(preds), 4).float()
    assert per_class_accuracy(scores, target, 4) == per_class_accuracy(preds, target, 4)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        per_class_accuracy(preds, target, 2)


def test_labelled_metrics_report_per_class_accuracy_and_print_it():
    from vlfuse.tasks.labelled.evaluate import labelled_metrics
    from vlfuse.tasks.labelled.report import format_labelled_metrics

    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    metrics = labelled_metrics(probs, torch.tensor([0, 1, 1, 2]), ["negative", "neutral", "positive"])
    assert metrics["per_class"] == {"negative": {"accuracy": 1.0, "count": 1}, "neutral": {"accuracy": 0.5, "count": 2},
                                    "positive": {"accuracy": 1.0, "count": 1}}
    text = format_labelled_metrics({**metrics, "task": "classification", "classes": ["negative", "neutral",
                                                                                     "positive"]})
    assert "class 'neutral'" in text and "50.00% of 2" in text


def test_answer_priors_per_question_type_and_question():
    from vlfuse.metrics.vqa import answer_prior_accuracy

    train = [("count", "how many dogs?", "1"), ("count", "how many cats?", "2"), ("count", "how many cats?", "2"),
             ("exists", "is there a dog?", "yes"), ("exists", "is there a cat?", "no"),
             ("exists", "is there a cat?", "no")]
    evaluated = [("count", "how many dogs?", "one"), ("count", "how many cats?", "2"),
                 ("exists", "is there a dog?", "yes"), ("new", "what?", "no")]
    result = answer_prior_accuracy(train, evaluated)
    assert result["prior"] == {"answer": "2", "accuracy": 0.25}  # "2" and "no" tie at 3: the first seen wins
    assert result["per_question_type_prior"]["accuracy"] == 0.25  # count -> "2", exists -> "no", new -> "2"
    assert result["per_question_type_prior"]["types"]["count"] == {"answer": "2", "accuracy": 0.5, "count": 2}
    assert result["per_question_prior"]["accuracy"] == 0.75  # "one" == "1" after the VQA normalisation
    with pytest.raises(ValueError):
        answer_prior_accuracy([], evaluated)


# --------------------------------------------------------------------------- questions from COCO instances

def write_instances(path: Path) -> Path:
    categories = [{"id": 1, "name": "person", "supercategory": "person"},
                  {"id": 2, "name": "dog", "supercategory": "animal"},
                  {"id": 3, "name": "cat", "supercategory": "animal"},
                  {"id": 4, "name": "apple", "supercategory": "food"},
                  {"id": 5, "name": "skis", "supercategory": "sports"}]

    def ann(i, image, cat, area, crowd=0):
        return {"id": i, "image_id": image, "category_id": cat, "area": area, "iscrowd": crowd, "bbox": [0, 0, 1, 1]}

    doc = {"images": [{"id": 7, "file_name": "000000000007.jpg"}, {"id": 8, "file_name": "000000000008.jpg"},
                      {"id": 9, "file_name": "000000000009.jpg"}],  # 9 has no objects: no questions
           "categories": categories,
           "annotations": [ann(1, 7, 2, 50.0), ann(2, 7, 2, 80.0), ann(3, 7, 1, 900.0, crowd=1), ann(4, 7, 1, 30.0),
                           ann(5, 8, 3, 10.0), ann(6, 8, 4, 5.0), ann(7, 8, 5, 20.0)]}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_coco_questions_ask_only_what_the_annotations_answer(tmp_path):
    from vlfuse.data.coco_questions import generate
    from vlfuse.data.formats.vqav2 import read_vqa_v2

    summary = generate(write_instances(tmp_path / "instances_train2017.json"), tmp_path / "q")
    assert summary["split"] == "train2017" and summary["images"] == 2
    for name in ("000000000007.jpg", "000000000008.jpg"):
        (tmp_path / name).write_bytes(b"jpg")  # only existence is checked when reading
    read = read_vqa_v2(tmp_path / "q" / "train2017_questions.json", tmp_path / "q" / "train2017_annotations.json",
                       tmp_path)
    qa = {(s.image_path.name, s.question): s.answer for s in read.samples}
    first, second = "000000000007.jpg", "000000000008.jpg"
    assert qa[(first, "how many dogs are there?")] == "2"
    assert (first, "how many people are there?") not in qa  # a crowd region: the count is unknown
    assert qa[(first, "is there a person?")] == "yes" and qa[(first, "is there a dog?")] == "yes"
    assert qa[(first, "what is the largest object?")] == "person"
    assert qa[(first, "what animal is in the picture?")] == "dog"
    assert qa[(second, "is there an apple?")] == "yes" and qa[(second, "are there any skis?")] == "yes"
    assert qa[(second, "how many skis are there?")] == "1"
    assert qa[(second, "what food is in the picture?")] == "apple"
    for image in (first, second):  # as many "no" as "yes" where enough categories are absent
        answers = [a for (i, q), a in qa.items() if i == image and q.startswith(("is there", "are there"))]
        assert answers.count("no") == min(answers.count("yes"), 5 - answers.count("yes"))
    assert {s.question_type for s in read.samples} >= {"how many", "is there", "what is the largest", "what animal"}
    again = generate(tmp_path / "instances_train2017.json", tmp_path / "q2")
    assert (tmp_path / "q2" / "train2017_questions.json").read_text() == \
        (tmp_path / "q" / "train2017_questions.json").read_text() and again == {**summary, "out": str(tmp_path / "q2")}


def test_coco_questions_cli_writes_both_splits_and_names_a_bad_file(tmp_path, cli_main):
    write_instances(tmp_path / "instances_val2017.json")
    result = cli_main("data", "coco-questions", tmp_path / "instances_val2017.json", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "val2017:" in result.stdout and (tmp_path / "out" / "val2017_annotations.json").is_file()
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}), encoding="utf-8")
    assert_one_line_error(cli_main("data", "coco-questions", tmp_path / "bad.json", "--out", tmp_path / "o"),
                          "bad.json", "annotations")


def test_coco_mini_questions_read_back_with_their_photos(tmp_path):
    from vlfuse.data.coco_questions import generate
    from vlfuse.data.formats.vqav2 import read_vqa_v2

    coco = shared_data("coco-mini")
    summary = generate(coco / "annotations" / "instances_val2017.json", tmp_path)
    assert summary["images"] == 79 and summary["questions"] > 900
    read = read_vqa_v2(tmp_path / "val2017_questions.json", tmp_path / "val2017_annotations.json",
                       coco / "val2017")
    assert read.skipped.count == 0 and len(read.samples) == summary["questions"]
    assert all(s.image_path.is_file() for s in read.samples)


# --------------------------------------------------------------------------- early stopping

def test_early_stopping_stops_and_exports_the_best_epoch(shapes_root, tiny_config, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from vlfuse.tasks import train
    from vlfuse.train import run as run_module
    from vlfuse.train.checkpoint_io import load_checkpoint_file

    seen = {}
    real_restore = run_module.restore_best

    def restore_and_record(trainer, module):  # keep what the run deletes: the best checkpoint, the last weights
        shutil.copy(tmp_path / "run" / "checkpoints" / "best.ckpt", tmp_path / "best.ckpt")
        seen["last"] = {k: v.clone() for k, v in module.model.state_dict().items()}
        return real_restore(trainer, module)

    monkeypatch.setattr(run_module, "restore_best", restore_and_record)
    # val_loss watched for its maximum: training lowers it, so an early epoch is the best and the
    # run stops after `patience` epochs without a new best
    config = tiny_config(shapes_root, tmp_path / "run", "train.epochs=6", "data.test=null",
                         "train.early_stopping={patience: 1, monitor: val_loss, mode: max}")
    result = train(config, progress=False)
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    stop = summary["early_stopping"]
    assert summary["epochs_completed"] < 6 and stop["stopped_epoch"] == summary["epochs_completed"] - 1, summary
    best = load_checkpoint_file(tmp_path / "best.ckpt")
    assert best["epoch"] == stop["best_epoch"] < stop["stopped_epoch"]
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()
    # a deliberate finish: nothing left to resume, and no "undertrained" note
    assert summary["stopped_by"] == "early stopping" and "undertrained" not in summary["note"]
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    exported = load_file(str(result.model_dir / "model.safetensors"))
    trained = [k for k, v in exported.items() if v.is_floating_point() and k in seen["last"]]
    assert trained and all(torch.equal(exported[k], best["state_dict"][f"model.{k}"]) for k in trained)
    assert any(not torch.equal(exported[k], seen["last"][k]) for k in trained)  # not the last epoch's


def test_early_stopping_without_a_val_split_is_a_config_error(shapes_root, tmp_path, cli_main, write_config):
    config = write_config(tmp_path / "c.yaml", shapes_root, tmp_path / "run", "data.val=null",
                          "train.early_stopping={patience: 2}")
    assert_one_line_error(cli_main("train", config), "train.early_stopping", "data.val")


# --------------------------------------------------------------------------- classification on cached features

CLASSIFICATION_TINY = [
    "model.dim=16", "model.text_encoder={name: transformer, layers: 1, heads: 2, dropout: 0.0}",
    "model.fusion={name: cross_attention, layers: 1, heads: 2}", "model.head={name: classifier, hidden: 16}",
    "data.image_size=32", "data.train={path: classification_train.jsonl}", "data.val={path: classification_val.jsonl}",
    "data.test={path: classification_train.jsonl}", "train.progress_bar=false", "train.epochs=1",
    "train.batch_images=4", "train.warmup_steps=1", "train.accelerator=cpu", "train.max_minutes=null",
]


def test_classification_trains_on_cached_features_and_compares_fusions(table_root, tmp_path, monkeypatch):

    from vlfuse.compare import compare
    from vlfuse.config import load_config
    from vlfuse.models.factory import IMAGE_ENCODERS

    monkeypatch.setitem(IMAGE_ENCODERS, "tiny_frozen", TinyFrozenEncoder)
    base = load_config(REPO / "configs" / "classification_real.yaml",
                       [f"data.root={table_root}", f"data.feature_cache={tmp_path / 'features'}",
                        "model.image_encoder={name: tiny_frozen}", "train.early_stopping={patience: 1}",
                        *CLASSIFICATION_TINY])
    TinyFrozenEncoder.backbone_calls = 0
    md = compare(base, ["late", "gated", "cross_attention"], tmp_path / "cmp", command="vlfuse compare", progress=False)
    board = json.loads((tmp_path / "cmp" / "leaderboard.json").read_text())
    rows = {row["fusion"]: row for row in board["rows"]}
    assert set(rows) == {"late", "gated", "cross_attention"}
    for fusion, row in rows.items():
        run = json.loads((tmp_path / "cmp" / fusion / "seed0" / "run.json").read_text())
        assert run["frozen_image_features_cached"] == "data.feature_cache" and "early_stopping" in run
        metrics = json.loads((tmp_path / "cmp" / fusion / "seed0" / "eval.json").read_text())
        assert set(metrics["per_class"]) == set(metrics["classes"]) == set(row["per_class"])
        assert row["macro_f1"]["mean"] == pytest.approx(metrics["macro_f1"])
    text = md.read_text()
    assert "macro-F1 %" in text and "Accuracy per class" in text
    assert all(f"| {c} |" in text for c in rows["late"]["per_class"])


def test_compare_keeps_the_heads_other_settings_when_late_makes_it_linear(tmp_path):
    from vlfuse.compare import fusion_config
    from vlfuse.config import load_config

    base = load_config(REPO / "configs" / "vqa_real.yaml")
    late = fusion_config(base, "late", 0, None, tmp_path)
    assert late.model.head == {"name": "classifier", "hidden": 0, "dropout": 0.3, "loss": "soft_bce"}


# --------------------------------------------------------------------------- the shipped recipes on real data

@pytest.mark.slow
def test_vqa_real_recipe_runs_on_real_vqa_v2_samples(tmp_path):
    """configs/vqa_real.yaml end to end on the three real VQA v2 questions (10 human answers each):
    soft-score training, early stopping on val, official VQA accuracy in the evaluation."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from vlfuse.config import load_config
    from vlfuse.tasks import evaluate_split, train

    formats = shared_data("formats")
    split = {"questions": "vqav2/questions.json", "annotations": "vqav2/annotations.json", "images": "images/vqav2"}
    config = load_config(REPO / "configs" / "vqa_real.yaml", [
        f"data.root={formats}", f"data.train={json.dumps(split)}", f"data.val={json.dumps(split)}",
        f"data.feature_cache={tmp_path / 'features'}", f"out_dir={tmp_path / 'run'}", "train.epochs=2",
        "train.progress_bar=false", "model.fusion={name: cross_attention, layers: 1, heads: 4}"])
    result = train(config, progress=False)
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["train"]["questions"] == 3 and summary["early_stopping"]["monitor"] == "val_acc"
    metrics = evaluate_split(result.model_dir, config, "val", None, progress=False)
    assert metrics["vqa_accuracy"]["count"] == 3 and 0 <= metrics["vqa_accuracy"]["accuracy"] <= 1


def test_flickr8k_three_class_set_pairs_photos_with_own_similar_and_unrelated_captions(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from bench.f8k_classification import make_examples

    scenes = [("a brown dog runs on the grass", "a dog running through green grass"),
              ("a black dog runs across the grass", "two dogs run on a grassy field"),
              ("a man rides a bike down a hill", "a cyclist rides his bike on a dirt road"),
              ("a boy rides a bike in the street", "a child on a bike rides past a wall"),
              ("a woman sings on a stage", "a singer with a microphone performs on stage"),
              ("a band plays music on a stage", "a man sings into a microphone on stage")]
    images = [{"filename": f"{i}.jpg", "sentences": [{"raw": c} for c in caps]} for i, caps in enumerate(scenes)]
    examples = make_examples(images, seed=0)
    assert sorted(e["label"] for e in examples) == ["match"] * 2 + ["similar"] * 2 + ["unrelated"] * 2
    partner = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4}  # each photo's nearest photo by its captions
    for e in examples:
        i = int(Path(e["image"]).stem)
        own = e["text"] in scenes[i]
        assert own == (e["label"] == "match")
        if e["label"] == "similar":
            assert e["text"] in scenes[partner[i]]
        if e["label"] == "unrelated":
            assert e["text"] not in scenes[partner[i]]
    assert make_examples(images, seed=0) == examples
