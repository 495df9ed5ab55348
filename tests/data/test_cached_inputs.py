"""vlfuse.data.cached_inputs: the real-photo recipes (configs/vqa_real.yaml, configs/classification_real.yaml)
read both feature caches, the frozen image grid and the frozen text encoder's states, in training and in
evaluation, and give the numbers of running the encoders. That another text encoder or tokenizer never
reads an old cache is a property of the cache itself: tests/data/test_feature_cache.py."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from helpers import TinyFrozenEncoder, read_json, write_yaml
from conftest import REPO

from vlfuse.encoders.hf_text import PretrainedTextEncoder

SHAPES_VQA = {split: json.dumps({"questions": f"vqa/{split}_questions.json",
                                 "annotations": f"vqa/{split}_annotations.json", "images": f"images/{split}"})
              for split in ("train", "val", "test")}
RECIPES = {  # task: (config, its data on the tiny shapes set, what `vlfuse cache build` calls its texts)
    "vqa": ("vqa_real.yaml", [f"data.{split}={spec}" for split, spec in SHAPES_VQA.items()], "questions"),
    "classification": ("classification_real.yaml", [f"data.{split}={{path: classification_{split}.jsonl}}"
                                                    for split in ("train", "val", "test")], "texts"),
}


def recipe(task: str, data_root, out_dir, bert, cache, *extra: str):
    """The shipped recipe of `task`, shrunk: the tiny frozen image encoder ("tiny_frozen") and the tiny
    BERT frozen, on the shapes data, one short epoch."""
    from vlfuse.config import load_config

    name, data, _ = RECIPES[task]
    return load_config(REPO / "configs" / name, [
        f"data.root={data_root}", *data, f"out_dir={out_dir}", f"data.feature_cache={cache}",
        "data.image_size=32", "data.max_question_length=16", "model.dim=16", "model.image_encoder={name: tiny_frozen}",
        f"model.text_encoder={{name: pretrained, freeze: true, path: {bert}}}",
        "model.fusion={name: cross_attention, layers: 1, heads: 2, dropout: 0.0}",
        "model.head.hidden=16", "model.head.dropout=0.0", "train.epochs=1", "train.batch_images=4",
        "train.warmup_steps=1", "train.progress_bar=false", "train.accelerator=cpu", "train.max_minutes=null",
        "train.early_stopping={patience: 1}", *extra])


@pytest.fixture
def roots(shapes_root, table_root) -> dict:
    return {"vqa": shapes_root, "classification": table_root}


@pytest.mark.parametrize("task, tune_layers", [("vqa", 0), ("classification", 1)])
def test_cached_text_states_and_image_features_give_the_logits_of_the_encoders(
        task, tune_layers, roots, tmp_path, tiny_bert_words, tiny_frozen_in_factory):
    from vlfuse.data.answers import AnswerVocab
    from vlfuse.data.cached_inputs import cached_inputs
    from vlfuse.data.feature_cache import feature_loader
    from vlfuse.data.formats.common import SkipLog
    from vlfuse.data.loading import read_split
    from vlfuse.data.tokenizer import load_tokenizer
    from vlfuse.data.vqa_dataset import GroupedVQADataset, collate_groups
    from vlfuse.models.factory import build_model
    from vlfuse.tasks.vqa.module import answer_logits

    config = recipe(task, roots[task], tmp_path / "run", tiny_bert_words, tmp_path / "features",
                    f"model.text_encoder.tune_layers={tune_layers}")
    samples = read_split(config.data, "train").samples[:24]
    tokenizer = load_tokenizer(tiny_bert_words / "tokenizer.json")
    answers = AnswerVocab.build((s.answer for s in samples), 100)
    torch.manual_seed(0)
    model = build_model(config, tokenizer.get_vocab_size(), len(answers)).eval()
    args = (tokenizer, answers, 32, 16, SkipLog("error"), False)
    plain = GroupedVQADataset(samples, *args)
    cached = GroupedVQADataset(samples, *args, image_loader=feature_loader(config, model.image_encoder, samples, False))
    (items,), collate = cached_inputs(config, model.text_encoder, [cached], partial(collate_groups, with_samples=False),
                                      progress=False)
    batch = collate([items[i] for i in range(len(items))])
    assert {"image_features", "text_states"} <= set(batch) and "images" not in batch
    assert batch["text_states"].shape[:2] == batch["input_ids"].shape  # padded like the token ids
    with torch.no_grad():
        expected = answer_logits(model, collate_groups([plain[i] for i in range(len(plain))], with_samples=False))
        assert torch.allclose(answer_logits(model, batch), expected, atol=1e-5)


def raise_if_run(*args):
    raise AssertionError("a frozen encoder ran although its outputs are cached")


def predictions(path) -> dict:
    """question id -> (prediction, the probability of each class or the top one) of an evaluation's records."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["question_id"]: (r["prediction"], r.get("probabilities") or {r["prediction"]: r["confidence"]})
            for r in records}


@pytest.mark.parametrize("task", ["vqa", "classification"])
def test_the_recipes_train_and_evaluate_from_both_caches_alone(task, roots, tmp_path, cli_main, tiny_bert_words,
                                                               tiny_frozen_in_factory, monkeypatch):
    """`vlfuse cache build` fills both caches; training (and its validation) and the evaluation then never
    run a frozen part, and evaluating without the caches gives the same predictions and probabilities."""
    config = write_yaml(tmp_path / "c.yaml", recipe(task, roots[task], tmp_path / "run", tiny_bert_words,
                                                    tmp_path / "features"))
    result = cli_main("cache", "build", config)
    assert result.returncode == 0, result.stderr
    assert "images of train, val, test cached" in result.stdout
    assert f"{RECIPES[task][2]} cached" in result.stdout and "states of width 16" in result.stdout, result.stdout
    with monkeypatch.context() as frozen:
        frozen.setattr(TinyFrozenEncoder, "frozen_features", raise_if_run)
        frozen.setattr(PretrainedTextEncoder, "frozen_features", raise_if_run)
        result = cli_main("train", config)
        assert result.returncode == 0, result.stderr
    run = read_json(tmp_path / "run" / "run.json")
    assert run["steps"] > 0 and run["frozen_text_states_cached"] is True, run
    cached = predictions(tmp_path / "run" / "eval_predictions.jsonl")
    result = cli_main("eval", tmp_path / "run" / "model", "--set", "data.feature_cache=null",
                      "--out", tmp_path / "plain.json")
    assert result.returncode == 0, result.stderr
    plain = predictions(tmp_path / "plain_predictions.jsonl")
    assert cached.keys() == plain.keys() and len(cached) > 0
    for key, (prediction, probabilities) in cached.items():
        assert prediction == plain[key][0] and probabilities == pytest.approx(plain[key][1], abs=1e-5), key
