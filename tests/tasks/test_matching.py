"""Task matching (NLVR style): hard negatives from captions, the sentence split, consistency, a tiny
run through the CLI, save -> load -> same outputs, bad inputs.

The tiny run trains on the 14 training images of the shared tiny shapes data (captions layout) and
is tested on the same split: this checks the plumbing, not how well matching generalises.
"""

from __future__ import annotations

import json
import random
from functools import partial
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error
from conftest import CROSS_ATTENTION, REPO, SHARED_DATA, TINY_TRAIN, tiny_model

NLVR_DEV = SHARED_DATA / "nlvr-dev"

TINY = [
    *tiny_model(fusion=CROSS_ATTENTION),
    "data.val=null",
    "data.test={annotations: captions/captions_train.json, images: images/train}",
    *TINY_TRAIN,
    "train.max_minutes=null",
]


def sample(qid, sentence, answer, image="a.png", **extra):
    from vlfuse.data.records import VQASample

    return VQASample(question_id=qid, image_id=qid, image_path=Path(image), question=sentence, answer=answer,
                     extra=extra)


# --------------------------------------------------------------------------- negatives

def test_hard_negative_is_the_most_similar_caption_of_another_image():
    from vlfuse.data.matching import most_similar_other, ngram_vectors
    from vlfuse.losses.itm import sample_hard_negatives

    captions = ["a red circle and a blue square",   # image 0
                "a red circle and a blue triangle",  # image 1: one word from caption 0
                "a green square on the left",        # image 2
                "a green square on the right"]       # image 3: one word from caption 2
    vectors = ngram_vectors(captions)
    assert vectors.shape[0] == 4 and torch.allclose(vectors.norm(dim=1), torch.ones(4))
    hardest = most_similar_other(vectors, torch.arange(4))
    assert hardest.tolist() == [1, 0, 3, 2]
    # With one caption per image this is the losses.itm hardest negative (temperature 0).
    text_for_image, _ = sample_hard_negatives(vectors @ vectors.T, temperature=0)
    assert text_for_image.tolist() == hardest.tolist()
    # A caption of the same image is never a negative, however similar; chunking changes nothing.
    owner = torch.tensor([0, 0, 1, 2])
    picked = most_similar_other(vectors, owner, chunk=1)
    assert picked[0].item() != 1 and picked[1].item() != 0
    assert picked.tolist() == most_similar_other(vectors, owner).tolist()
    with pytest.raises(ValueError, match="two images"):
        most_similar_other(vectors, torch.zeros(4, dtype=torch.long))


def test_attribute_swap_changes_one_listed_word():
    from vlfuse.data.matching import swap_attribute

    words = ["circle", "square", "triangle"]
    caption = "a red circle on the left, a blue square at the top"
    for seed in range(10):
        swapped = swap_attribute(caption, words, random.Random(seed))
        before, after = caption.split(), swapped.split()
        changed = [(a, b) for a, b in zip(before, after) if a != b]
        assert len(before) == len(after) and len(changed) == 1
        old, new = (w.strip(",") for w in changed[0])
        assert old in words and new in words and old != new
    assert swap_attribute("a red ball", words, random.Random(0)) is None
    assert swap_attribute("a circled cube", words, random.Random(0)) is None  # whole words only


def test_captions_become_balanced_true_and_false_statements(shapes_root):
    from vlfuse.config import MatchingConfig
    from vlfuse.data.formats.coco import read_coco_captions
    from vlfuse.data.matching import captions_to_statements

    read = read_coco_captions(shapes_root / "captions" / "captions_train.json", shapes_root / "images" / "train")
    images = read.samples
    captions = {s.image_id: s.captions[0] for s in images}
    for negatives in ("similar", "attribute", "mixed"):
        statements = captions_to_statements(images, MatchingConfig(negatives=negatives), seed=0)
        assert len(statements) == 2 * len(images)
        assert sum(s.answer == "true" for s in statements) == len(images)
        kinds = {s.question_type for s in statements if s.answer == "false"}
        assert kinds == ({"similar", "attribute"} if negatives == "mixed" else {negatives})
        for s in statements:
            if s.answer == "true":
                assert s.question == captions[s.image_id] and s.question_type == "positive"
            elif s.question_type == "similar":  # another image's caption, word for word
                assert s.question != captions[s.image_id] and s.question in captions.values()
            else:  # its own caption with one shape changed
                assert s.question != captions[s.image_id]
                assert len(s.question.split()) == len(captions[s.image_id].split())
            assert s.extra["sentence_id"] == s.question
    again = captions_to_statements(images, MatchingConfig(), seed=0)
    assert [s.question for s in again] == [s.question for s in captions_to_statements(images, MatchingConfig(), 0)]


# --------------------------------------------------------------------------- labels, split, consistency

def test_true_false_labels_are_normalised_and_others_refused():
    from vlfuse.data.matching import true_false_samples
    from vlfuse.errors import DataError

    out = true_false_samples([sample(1, "s", "True"), sample(2, "s", "no"), sample(3, "s", None)], "x.json")
    assert [s.answer for s in out] == ["true", "false", None]
    with pytest.raises(DataError, match=r"x\.json.*question_id 7.*'maybe'"):
        true_false_samples([sample(7, "s", "maybe")], "x.json")


def test_sentence_split_keeps_sentences_whole_and_is_deterministic():
    from vlfuse.data.matching import hold_out_sentences, sentence_id

    samples = [sample(f"{s}-{w}-{k}", f"sentence {s}", "true", identifier=f"{s}-{w}", image_index=k)
               for s in range(20) for w in range(3) for k in range(2)]
    assert sentence_id(samples[7], "nlvr") == "1"
    test = hold_out_sentences(samples, "nlvr", 0.25, seed=0, held_out=True)
    train = hold_out_sentences(samples, "nlvr", 0.25, seed=0, held_out=False)
    ids = {name: {sentence_id(s, "nlvr") for s in part} for name, part in (("test", test), ("train", train))}
    assert len(ids["test"]) == 5 and len(ids["train"]) == 15 and not ids["test"] & ids["train"]
    assert len(test) + len(train) == len(samples) and len(test) == 5 * 6  # all 6 images of each sentence
    assert [s.question_id for s in hold_out_sentences(list(reversed(samples)), "nlvr", 0.25, 0, True)] == \
        [s.question_id for s in reversed(test)]  # line order does not move the split
    assert ids["test"] != {sentence_id(s, "nlvr") for s in hold_out_sentences(samples, "nlvr", 0.25, 1, True)}


def test_sentence_split_of_the_real_nlvr_dev_set():
    if not (NLVR_DEV / "dev.json").is_file():
        pytest.skip(f"NLVR dev set not found at {NLVR_DEV}")
    from vlfuse.config import load_config
    from vlfuse.data.matching import sentence_id
    from vlfuse.tasks.labelled.data import read_labelled

    config = load_config(REPO / "configs" / "matching_nlvr.yaml", [f"data.root={NLVR_DEV}"])
    train, test = (read_labelled(config, split).samples for split in ("train", "test"))
    train_ids, test_ids = ({sentence_id(s, "nlvr") for s in part} for part in (train, test))
    assert not train_ids & test_ids and len(test_ids) == round(0.25 * len(train_ids | test_ids))
    assert all(s.extra["image_index"] == 0 for s in train + test)  # max_images_per_statement: 1
    assert {s.answer for s in test} == {"true", "false"}


def test_consistency_and_metrics_on_a_hand_worked_example():
    from vlfuse.tasks.labelled.evaluate import labelled_metrics

    # Sentence A: 3 images, all right. B: 2 images, one wrong. C: 1 image, right. D: 2 images, both wrong.
    sentences = ["A", "A", "A", "B", "B", "C", "D", "D"]
    target = torch.tensor([1, 1, 0, 1, 0, 1, 0, 0])
    preds = torch.tensor([1, 1, 0, 1, 1, 1, 1, 1])
    probs = torch.nn.functional.one_hot(preds, 2).float() * 0.6 + 0.2  # [0.2, 0.8] or [0.8, 0.2]
    m = labelled_metrics(probs, target, ["false", "true"], sentences)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["consistency"] == pytest.approx(2 / 4) and m["sentences"] == 4  # A and C
    # F1(true) = 2*4/(2*4+3+0) = 8/11; F1(false) = 2*1/(2*1+0+3) = 2/5
    assert m["macro_f1"] == pytest.approx((8 / 11 + 2 / 5) / 2)
    # positives score 0.8 (4) or... all 4 positives at 0.8; negatives: 3 at 0.8, 1 at 0.2 -> AUROC = (4*1 + 4*3*0.5)/16
    assert m["auroc"] == pytest.approx((4 * 1 + 12 * 0.5) / 16)
    # Majority class (true, 4 of 8; ties go to the first seen): consistency = sentences all true: C only.
    assert m["majority_baseline"] == {"class": "true", "accuracy": 0.5, "consistency": 0.25}


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def matching_run(shapes_root, tmp_path_factory):
    """configs/matching_shapes.yaml shrunk to the tiny model, trained through the CLI's own code path."""
    import yaml

    from vlfuse.config import load_config, to_dict

    folder = tmp_path_factory.mktemp("matching")
    config = load_config(REPO / "configs" / "matching_shapes.yaml",
                         [f"data.root={shapes_root}", f"out_dir={folder / 'run'}", *TINY])
    path = folder / "matching.yaml"
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
    return path, folder / "run"


def test_train_eval_predict_through_the_cli(matching_run, cli_main, shapes_root):
    config, out = matching_run
    result = cli_main("train", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "consistency" in result.stdout and "majority class" in result.stdout
    metrics = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert metrics["task"] == "matching" and metrics["classes"] == ["false", "true"]
    assert metrics["examples"] == 28 and set(metrics["families"]) == {"positive", "similar", "attribute"}
    for key in ("accuracy", "macro_f1", "auroc", "consistency"):
        assert 0 <= metrics[key] <= 1
    assert metrics["majority_baseline"]["accuracy"] == 0.5
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["task"] == "matching" and run["train"]["examples"] == 28 and run["steps"] == 8
    assert json.loads((out / "model" / "answers.json").read_text(encoding="utf-8")) == ["false", "true"]

    result = cli_main("eval", out / "model", "--out", out / "again.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "again.json").read_text(encoding="utf-8"))["accuracy"] == metrics["accuracy"]

    record = json.loads((out / "eval_predictions.jsonl").read_text(encoding="utf-8").splitlines()[0])
    result = cli_main("predict", out / "model", "--image", record["image"], "--question", record["text"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == record["prediction"] and lines[0] in ("true", "false")
    probs = {line.split()[1]: float(line.split()[0].rstrip("%")) / 100 for line in lines[1:]}
    assert set(probs) == {"true", "false"} and sum(probs.values()) == pytest.approx(1, abs=1e-3)
    assert probs[record["prediction"]] == pytest.approx(record["probabilities"][record["prediction"]], abs=1e-4)


def test_saved_model_gives_the_trained_models_outputs(matching_run, cli_main):
    from vlfuse.config import load_config
    from vlfuse.models.factory import build_model
    from vlfuse.models.saved import load_model_dir

    config, out = matching_run
    if not (out / "model" / "model.safetensors").is_file():
        assert cli_main("train", config).returncode == 0
    saved = load_model_dir(out / "model", task="matching")
    fresh = build_model(load_config(out / "model" / "config.yaml"), saved.tokenizer.get_vocab_size(), 2)
    from safetensors.torch import load_model

    load_model(fresh, str(out / "model" / "model.safetensors"))
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    ids = torch.randint(1, saved.tokenizer.get_vocab_size(), (3, 7))
    mask = torch.ones(3, 7, dtype=torch.bool)
    index = torch.tensor([0, 1, 1])
    with torch.no_grad():
        a, _ = saved.model.eval()(images, ids, mask, index)
        b, _ = fresh.eval()(images, ids, mask, index)
    assert a.shape == (3, 2) and torch.equal(a, b)
    # ... and the stored predictions are what the loaded model says now.
    import vlfuse

    record = json.loads((out / "eval_predictions.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    prediction = vlfuse.load(out / "model").predict(record["image"], record["text"])
    assert prediction.answer == record["prediction"]
    assert prediction.confidence == pytest.approx(record["probabilities"][record["prediction"]], abs=1e-5)


def test_frozen_image_features_cached_once_give_the_same_loss(shapes_root):
    """The in-memory cache of a frozen encoder's backbone output changes no result (float16 aside)."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from vlfuse.config import load_config
    from vlfuse.data.formats.common import SkipLog
    from vlfuse.data.matching import LABELS
    from vlfuse.data.answers import AnswerVocab
    from vlfuse.data.tokenizer import build_tokenizer
    from vlfuse.data.vqa_dataset import GroupedVQADataset, collate_groups
    from vlfuse.models.factory import build_model
    from vlfuse.data.feature_cache import ImagesAreFeatures
    from vlfuse.tasks.labelled.data import cache_frozen_images, read_labelled
    from vlfuse.tasks.vqa.module import VQAModule

    config = load_config(REPO / "configs" / "matching_shapes.yaml",
                         [f"data.root={shapes_root}", *TINY, "model.image_encoder={name: efficientnet, freeze: true}"])
    samples = read_labelled(config, "train").samples[:6]
    tokenizer = build_tokenizer(s.question for s in samples)
    dataset = GroupedVQADataset(samples, tokenizer, AnswerVocab(list(LABELS)), 32, 64, SkipLog("error"), False)
    model = build_model(config, tokenizer.get_vocab_size(), 2).eval()
    batch = collate_groups([dataset[i] for i in range(len(dataset))], with_samples=False)
    module = VQAModule(model, config.train, 1)
    plain = module.losses(batch)["loss"]
    assert cache_frozen_images(model.image_encoder, dataset, progress=False)
    assert dataset.images.dtype == torch.float16 and dataset.images.shape[1:] == (1280, 7, 7)
    features = ImagesAreFeatures(partial(collate_groups, with_samples=False))  # as prepare_labelled batches them
    cached = module.losses(features([dataset[i] for i in range(len(dataset))]))["loss"]
    assert cached.item() == pytest.approx(plain.item(), abs=1e-3)
    model.image_encoder.unfreeze()  # a trainable encoder must see the images at every step
    assert not cache_frozen_images(model.image_encoder, dataset, progress=False)


# --------------------------------------------------------------------------- bad inputs

def test_bad_matching_inputs_are_one_line_errors(matching_run, cli_main, tmp_path):
    config, _ = matching_run
    result = cli_main("train", config, "--set", "matching.holdout_sentences=1.5", "--set", f"out_dir={tmp_path / 'a'}")
    assert_one_line_error(result, "matching.holdout_sentences")
    result = cli_main("train", config, "--set", "matching.negatives=nearest", "--set", f"out_dir={tmp_path / 'b'}")
    assert_one_line_error(result, "matching.negatives", "similar")
    table = tmp_path / "t.jsonl"
    table.write_text(json.dumps({"image": "x.png", "question": "two circles", "answer": "maybe"}) + "\n")
    (tmp_path / "x.png").write_bytes(b"")  # never opened: the label is refused first
    result = cli_main("train", config, "--set", "data.format=jsonl", "--set", "data.train={path: t.jsonl}",
                      "--set", f"data.root={tmp_path}", "--set", "data.test=null", "--set",
                      f"out_dir={tmp_path / 'c'}")
    assert_one_line_error(result, "t.jsonl", "true/false", "'maybe'")


def test_nlvr2_statements_group_by_sentence():
    """NLVR2 (photos, where the images exist: the format samples): labels true/false, sentences by identifier."""
    folder = SHARED_DATA / "formats"
    if not (folder / "nlvr2" / "tiny-dev.json").is_file():
        pytest.skip(f"NLVR2 sample not found under {folder}")
    from vlfuse.config import load_config
    from vlfuse.data.matching import sentence_id
    from vlfuse.tasks.labelled.data import read_labelled

    config = load_config(overrides=["task=matching", "data.format=nlvr2", f"data.root={folder}",
                                    "data.train={path: nlvr2/tiny-dev.json, images: images/nlvr2}"])
    samples = read_labelled(config, "train").samples
    assert samples and {s.answer for s in samples} <= {"true", "false"}
    ids = {s.question_id: sentence_id(s, "nlvr2") for s in samples}
    for qid, sid in ids.items():
        split, set_id, _, sentence = str(qid).split("-")
        assert sid == f"{split}-{set_id}-{sentence}"
