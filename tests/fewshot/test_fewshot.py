"""Few-shot transfer (vlfuse.fewshot): support sets, the two classifiers, the held-out-answer
filter, and the learning curve end to end through the CLI on a tiny model trained without yes/no."""

from __future__ import annotations

import copy
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from vlfuse.config import load_config
from vlfuse.data.answers import AnswerVocab
from vlfuse.data.loading import read_split
from vlfuse.errors import ConfigError, DataError
from vlfuse.fewshot.data import Candidates, check_shots, draw_episodes, new_answers
from vlfuse.fewshot.methods import linear_probe_predict, prototype_predict

HELD_OUT = ["yes", "no"]


@dataclass
class _Sample:
    answer: str | None


def _candidates(per_class: dict[str, int], same_split: bool, queries: int = 6) -> Candidates:
    samples = [_Sample(a) for a, n in per_class.items() for _ in range(n)]
    pools: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        pools.setdefault(s.answer, []).append(i)
    if same_split:
        return Candidates(samples, pools, list(range(len(samples))), True, 0)
    query = list(range(len(samples), len(samples) + queries))
    return Candidates(samples + [_Sample("a")] * queries, pools, query, False, 0)


# --------------------------------------------------------------------------- support sets

def test_support_sets_hold_k_per_answer_nested_and_apart_from_the_query():
    candidates = _candidates({"a": 12, "b": 9, "c": 15}, same_split=True)
    episodes = draw_episodes(candidates, [1, 3, 5], seeds=4)
    assert [(e.seed, e.shots) for e in episodes] == [(s, k) for s in range(4) for k in (1, 3, 5)]
    for e in episodes:
        answers = [candidates.samples[i].answer for i in e.support]
        assert sorted(answers) == sorted(["a", "b", "c"] * e.shots)
        assert not set(e.support) & set(e.query)  # one split: the query leaves the support out
        assert len(e.query) == 36 - 3 * e.shots
    by_seed = {(e.seed, e.shots): e.support for e in episodes}
    for seed in range(4):  # the 1-shot set lies inside the 3-shot set, which lies inside the 5-shot one
        assert set(by_seed[seed, 1]) < set(by_seed[seed, 3]) < set(by_seed[seed, 5])
    again = draw_episodes(candidates, [1, 3, 5], seeds=4)
    assert [e.support for e in again] == [e.support for e in episodes]  # deterministic by seed
    assert by_seed[0, 5] != by_seed[1, 5]  # another seed, another draw


def test_support_from_another_split_keeps_every_query_question():
    candidates = _candidates({"a": 4, "b": 4}, same_split=False, queries=6)
    for e in draw_episodes(candidates, [2], seeds=2):
        assert e.query == candidates.query
        assert all(i < 8 for i in e.support)


def test_more_shots_than_examples_is_one_clear_line():
    with pytest.raises(DataError) as info:
        check_shots({"a": [0, 1, 2, 3, 4, 5], "b": [6, 7, 8]}, [1, 5], same_split=False)
    message = str(info.value)
    assert "\n" not in message and "'b' has only 3 support examples" in message and "--shots 5" in message
    with pytest.raises(DataError, match="needs 4"):  # one table: one example must stay to be scored
        check_shots({"a": [0, 1, 2]}, [3], same_split=True)
    with pytest.raises(ConfigError, match="--shots"):
        check_shots({"a": [0]}, [0], same_split=False)


def test_new_answers_are_the_ones_the_model_lacks():
    known = AnswerVocab(["circle", "square"])
    samples = [_Sample(a) for a in ("circle", "Yes", "no", "square", "no", None)]
    assert new_answers(samples, known, None, "train.json") == ["no", "yes"]
    assert new_answers(samples, known, ["yes", "no"], "train.json") == ["yes", "no"]
    with pytest.raises(ConfigError, match="'circle' is one of the model's classes"):
        new_answers(samples, known, ["circle", "yes"], "train.json")
    with pytest.raises(DataError, match="no question has the answer 'maybe'"):
        new_answers(samples, known, ["yes", "maybe"], "train.json")
    with pytest.raises(DataError, match="nothing new to learn"):
        new_answers([_Sample("circle")], known, None, "train.json")
    with pytest.raises(ConfigError, match="at least 2 new answers"):  # one class would always be right
        new_answers([_Sample("circle"), _Sample("yes")], known, None, "train.json")


# --------------------------------------------------------------------------- classifiers

def test_prototypes_answer_by_the_nearest_class_mean():
    support = torch.tensor([[1.0, 0.1, 0], [1.0, -0.1, 0], [0, 1.0, 0], [0, 0, 2.0], [0, 0.2, 1.0]])
    labels = torch.tensor([0, 0, 1, 2, 2])
    query = torch.tensor([[3.0, 0, 0], [0.1, 5.0, 0], [0, 0, 0.5], [0.2, 1.0, 0.1]])
    assert prototype_predict(support, labels, query, 3).tolist() == [0, 1, 2, 1]
    # cosine: the length of a feature does not matter, only its direction
    assert prototype_predict(support, labels, 100 * query, 3).tolist() == [0, 1, 2, 1]
    # a class with no support example is never predicted
    assert 3 not in prototype_predict(support, labels, query, 4).tolist()


def test_linear_probe_separates_separable_features():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=generator) * 3
    labels = torch.arange(4).repeat_interleave(5)
    support = centres[labels] + 0.3 * torch.randn(20, 16, generator=generator)
    query_labels = torch.arange(4).repeat_interleave(25)
    query = centres[query_labels] + 0.3 * torch.randn(100, 16, generator=generator)
    predicted = linear_probe_predict(support, labels, query, 4)
    assert predicted.tolist() == query_labels.tolist()
    # one direction decides; a nuisance direction as long as the classes apart misleads the class
    # means under cosine, but the probe learns to ignore it
    x = torch.tensor([[1.0, 5.0], [1.2, -5.0], [-1.0, 5.0], [-1.2, -5.0]])
    probe = linear_probe_predict(x, torch.tensor([0, 0, 1, 1]), torch.tensor([[0.8, 0.0], [-0.8, 0.0]]), 2)
    assert probe.tolist() == [0, 1]
    assert torch.equal(linear_probe_predict(support, labels, query, 4), predicted)  # deterministic


def test_finetune_trains_only_the_fusion_top_and_starts_at_the_prototypes(trained_run):
    from vlfuse.data.formats.common import SkipLog
    from vlfuse.models.saved import load_model_dir
    from vlfuse.fewshot.features import encode, pooled_features
    from vlfuse.fewshot.finetune import finetune_predict, top_parameters

    saved = load_model_dir(trained_run.model_dir)
    fusion = saved.model.fusion  # the tiny co-attention fusion: text_blocks, image_blocks of one layer each
    assert len(top_parameters(fusion)) == len(list(fusion.parameters()))  # one layer: all of it is the top
    fusion.text_blocks.append(copy.deepcopy(fusion.text_blocks[0]))
    lower = {id(p) for p in fusion.text_blocks[0].parameters()}
    top = {id(p) for p in top_parameters(fusion)}
    assert not lower & top and {id(p) for p in fusion.text_blocks[1].parameters()} <= top
    assert {id(p) for p in fusion.pool.parameters()} <= top
    fusion.text_blocks.pop(-1)

    samples = read_split(trained_run.config.data, "train").samples[:24]
    encoded = encode(saved, samples, SkipLog("skip"), progress=False)
    features = pooled_features(saved, encoded)
    labels = torch.arange(3).repeat(8)
    support, query = torch.arange(0, 24, 2), torch.arange(1, 24, 2)
    before = {k: v.clone() for k, v in fusion.state_dict().items()}
    zero_steps = finetune_predict(fusion, encoded, support, labels[support], query, 3, steps=0)
    assert zero_steps.tolist() == prototype_predict(features[support], labels[support], features[query], 3).tolist()
    tuned = finetune_predict(fusion, encoded, support, labels[support], query, 3, steps=3)
    assert tuned.shape == (12,) and all(torch.equal(before[k], v) for k, v in fusion.state_dict().items())


# --------------------------------------------------------------------------- the held-out-answer filter

def test_exclude_answers_drops_them_from_every_split(tiny_config, shapes_root, tmp_path):
    config = tiny_config(shapes_root, tmp_path, "data.exclude_answers=['yes', 'No ']")
    train = read_split(config.data, "train").samples
    full = read_split(tiny_config(shapes_root, tmp_path).data, "train").samples
    assert train and all(s.answer not in HELD_OUT for s in train)
    assert len(train) == sum(s.answer not in HELD_OUT for s in full) < len(full)
    for split in ("val", "test"):
        assert all(s.answer not in HELD_OUT for s in read_split(config.data, split).samples)
    with pytest.raises(ConfigError, match="no training question has the answer 'purple'"):
        read_split(tiny_config(shapes_root, tmp_path, "data.exclude_answers=[purple]").data, "train")
    with pytest.raises(ConfigError, match="data.exclude_answers"):
        load_config(Path(__file__).parents[2] / "configs" / "vqa_shapes.yaml", ["data.exclude_answers=[yes]"])


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def held_out_model(write_config, tmp_path_factory):
    """A tiny VQA model trained (through the CLI, in this process) without any yes/no question, on data
    with enough held-out test questions."""
    from typer.testing import CliRunner

    from vlfuse.cli import app
    from vlfuse.data.shapes import generate

    root = tmp_path_factory.mktemp("fewshot_shapes")
    generate(root, images=24, questions_per_image=4, size=32, seed=1, test_fraction=0.25, progress=False,
             dialogs=False)
    out = tmp_path_factory.mktemp("fewshot_run") / "run"
    config = write_config(out.parent / "config.yaml", root, out, "data.exclude_answers=['yes', 'no']",
                          "train.epochs=1")
    run = CliRunner().invoke(app, ["train", str(config)])
    assert run.exit_code == 0, run.output
    return out / "model"


def test_fewshot_curve_through_the_cli(held_out_model, cli_main, tmp_path):
    answers = json.loads((held_out_model / "answers.json").read_text())
    assert "yes" not in answers and "no" not in answers  # never seen in training
    out, plot = tmp_path / "fewshot.json", tmp_path / "curve.png"
    run = cli_main("fewshot", held_out_model, "--shots", "1,2", "--seeds", "2", "--out", out, "--plot", plot,
                   "--ceiling")
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["answers"] == ["no", "yes"] and result["shots"] == [1, 2] and result["seeds"] == 2
    assert result["query_split"] == "test" and result["query_questions"] > 0
    assert result["methods"] == ["prototype", "linear_probe", "finetune"]
    for method in result["methods"]:
        for k in ("1", "2"):
            stats = result["curve"][method][k]
            assert len(stats["accuracies"]) == 2 and all(0 <= a <= 1 for a in stats["accuracies"])
            assert stats["mean"] == pytest.approx(statistics.fmean(stats["accuracies"]))
            assert stats["sd"] == pytest.approx(statistics.stdev(stats["accuracies"]))
            assert f"{100 * stats['mean']:.1f} ± {100 * stats['sd']:.1f}" in run.stdout
    assert result["chance"] == 0.5 and "2 new answers (no, yes)" in run.stdout
    ceiling = result["ceiling"]  # the probe on every support question of yes and no
    assert ceiling["examples"] == sum(result["support_pool"].values()) and 0 <= ceiling["accuracy"] <= 1
    assert plot.stat().st_size > 1000


def test_fewshot_bad_input_is_one_line(held_out_model, cli_main):
    run = cli_main("fewshot", held_out_model, "--shots", "1,1000", "--seeds", "2")
    assert run.returncode == 2
    assert run.stderr.strip().startswith("error:") and len(run.stderr.strip().splitlines()) == 1
    assert "--shots 1000" in run.stderr and "support examples" in run.stderr
    run = cli_main("fewshot", held_out_model, "--methods", "prototype,knn")
    assert run.returncode == 2 and "unknown method 'knn'" in run.stderr
    run = cli_main("fewshot", held_out_model, "--answers", "yes,circle")
    assert run.returncode == 2 and "'circle' is one of the model's classes" in run.stderr
