"""Training end to end: Python API, CLI, bad input, resume after a kill, and (slow) DDP on CPU.

Everything trains the tiny model of conftest.py on the tiny shapes data (14 train images, batch 4:
4 steps an epoch). CLI processes cost a second torch + Lightning import each (~5 s on a busy
machine), so error cases run through `vlfuse.cli.main` in this process, and two of them also in a
real process to check what a person sees there.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

import vlfuse
from vlfuse.data.shapes import FAMILIES, FAMILY_GROUP
from helpers import assert_one_line_error, read_json
from conftest import REPO

BASE_CONFIG = REPO / "configs" / "vqa_shapes.yaml"
TRAIN_IMAGES, BATCH, EPOCHS = 14, 4, 2
# The CLI run and the killed-and-resumed one train with dropout: a resume must replay its random draws.
DROPOUT = ["model.head={name: classifier, hidden: 16, dropout: 0.3}",
           "model.fusion={name: co_attention, layers: 1, heads: 2, dropout: 0.2}"]
STEPS_PER_EPOCH = math.ceil(TRAIN_IMAGES / BATCH)


def first_test_question(shapes_root: Path) -> tuple[Path, str]:
    q = read_json(shapes_root / "vqa" / "test_questions.json")["questions"][0]
    return shapes_root / "images" / "test" / f"test_{q['image_id']:06d}.png", q["question"]


# --------------------------------------------------------------------------- Python API end to end

def test_train_writes_model_dir_logs_run_summary_and_eval(trained_run):
    from vlfuse.config import load_config, to_dict

    out, model_dir = trained_run.out_dir, trained_run.model_dir
    for name in ("config.yaml", "model.safetensors", "tokenizer.json", "answers.json"):
        assert (model_dir / name).is_file(), name
    assert trained_run.result.model_dir == model_dir and not trained_run.result.interrupted
    # The saved config is the run's config, and loads as one.
    assert to_dict(load_config(model_dir / "config.yaml")) == to_dict(trained_run.config)

    run = read_json(out / "run.json")
    assert run["steps"] == EPOCHS * STEPS_PER_EPOCH
    assert run["epochs_completed"] == EPOCHS and run["interrupted"] is False
    assert run["train"]["images"] == TRAIN_IMAGES and run["train"]["questions"] == 4 * TRAIN_IMAGES
    assert run["train"]["skipped"] == {"count": 0, "reasons": []}
    assert run["val"]["images"] == 1
    answers = read_json(model_dir / "answers.json")
    assert run["answers"] == len(answers) and len(set(answers)) == len(answers)
    assert run["parameters"] > 0

    with (out / "logs" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["train_loss"]) for r in rows if r.get("train_loss")]
    assert len(losses) == run["steps"] and all(math.isfinite(x) for x in losses)
    assert any(r.get("val_loss") for r in rows)

    metrics = read_json(out / "eval.json")
    assert metrics == json.loads(json.dumps(trained_run.result.test_metrics))
    assert set(metrics) >= {"overall", "groups", "families", "unanswerable", "skipped"}
    assert metrics["overall"]["count"] == 4 and 0 <= metrics["overall"]["accuracy"] <= 1
    assert set(metrics["families"]) <= set(FAMILIES) and metrics["families"]
    assert set(metrics["groups"]) <= set(FAMILY_GROUP.values())
    assert sum(m["count"] for m in metrics["families"].values()) == metrics["overall"]["count"]
    assert sum(m["count"] for m in metrics["groups"].values()) == metrics["overall"]["count"]
    for family, m in metrics["families"].items():
        assert m["group"] == FAMILY_GROUP[family]
    records = (out / "eval_predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(records) == 4 and all(json.loads(r)["prediction"] in answers for r in records)


def test_predict_through_python_api(trained_run, shapes_root):
    from PIL import Image

    image, question = first_test_question(shapes_root)
    predictor = vlfuse.load(trained_run.model_dir)
    answers = read_json(trained_run.model_dir / "answers.json")
    result = predictor.predict(image, question)
    assert result.answer in answers
    assert len(result.top) == min(5, len(answers))
    probs = [p for _, p in result.top]
    assert probs == sorted(probs, reverse=True)
    assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
    assert (result.answer, result.confidence) == result.top[0]
    assert len({a for a, _ in result.top}) == len(result.top)
    # Every way of passing the image gives the same answer.
    for same in (str(image), image.read_bytes(), Image.open(image)):
        again = predictor.predict(same, question)
        assert again.answer == result.answer and same_top(again.top, result.top)
    everything = predictor.predict(image, question, top_k=100).top
    assert len(everything) == len(answers) and sum(p for _, p in everything) == pytest.approx(1, abs=1e-5)
    many = predictor.predict_many(image, [question, question.upper()])
    assert same_top(many[0].top, result.top) and many[1].answer == result.answer  # lowercased


def same_top(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    return [x for x, _ in a] == [x for x, _ in b] and [p for _, p in a] == pytest.approx([p for _, p in b])


def _logits(saved, shapes_root):
    from vlfuse.data.formats.common import SkipLog
    from vlfuse.data.loading import read_split
    from vlfuse.data.vqa_dataset import GroupedVQADataset, collate_groups

    cfg = saved.config
    read = read_split(cfg.data, "train")
    dataset = GroupedVQADataset(read.samples[:12], saved.tokenizer, saved.answers, cfg.data.image_size,
                                cfg.data.max_question_length, SkipLog("error"), progress=False)
    batch = collate_groups([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        logits, _ = saved.model.eval()(batch["images"], batch["input_ids"], batch["attention_mask"],
                                       batch["image_index"])
    return logits


def test_save_then_load_gives_identical_logits(trained_run, shapes_root, tmp_path):
    from vlfuse.models.saved import load_model_dir, save_model_dir

    first, second = load_model_dir(trained_run.model_dir), load_model_dir(trained_run.model_dir)
    reference = _logits(first, shapes_root)
    assert reference.shape == (12, len(first.answers))
    assert torch.equal(reference, _logits(second, shapes_root))
    # Saving the in-memory model and loading it again changes nothing, bit for bit.
    save_model_dir(tmp_path / "copy", first.model, first.config, first.tokenizer, first.answers)
    copy = load_model_dir(tmp_path / "copy")
    state, copied = first.model.state_dict(), copy.model.state_dict()
    assert list(state) == list(copied) and all(torch.equal(state[k], copied[k]) for k in state)
    assert torch.equal(reference, _logits(copy, shapes_root))
    assert not copy.model.training


# --------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def cli_reference(cli, shapes_root, write_config, tmp_path_factory):
    """`vlfuse train` in a fresh process: the CLI test, and the uninterrupted run for the resume tests."""
    root = tmp_path_factory.mktemp("cli_train")
    config = write_config(root / "tiny.yaml", shapes_root, root / "run", *DROPOUT)
    result = cli("train", config)
    return {"config": config, "out": root / "run", "result": result}


def test_cli_train(cli_reference):
    result, out = cli_reference["result"], cli_reference["out"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"Model saved to {out / 'model'}" in result.stdout
    assert "Accuracy" in result.stdout and "overall" in result.stdout
    for name in ("model/model.safetensors", "model/config.yaml", "model/tokenizer.json", "model/answers.json",
                 "run.json", "eval.json", "logs/metrics.csv"):
        assert (out / name).is_file(), name
    assert read_json(out / "run.json")["steps"] == EPOCHS * STEPS_PER_EPOCH


def test_cli_eval_prints_table_and_writes_json(cli, trained_run, tmp_path):
    out = tmp_path / "metrics.json"
    result = cli("eval", trained_run.model_dir, "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Accuracy" in result.stdout and "accuracy %" in result.stdout
    for name in ["overall", *read_json(out)["families"]]:
        assert name in result.stdout
    metrics = read_json(out)
    assert metrics["overall"]["count"] == 4 and set(metrics) >= {"overall", "groups", "families"}
    # The same model on the same split gives what training reported.
    assert metrics["overall"] == read_json(trained_run.out_dir / "eval.json")["overall"]
    assert len((tmp_path / "metrics_predictions.jsonl").read_text().splitlines()) == 4


def test_cli_predict_prints_answer_and_top5(cli, trained_run, shapes_root):
    image, question = first_test_question(shapes_root)
    result = cli("predict", trained_run.model_dir, "--image", image, "--question", question)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    answers = read_json(trained_run.model_dir / "answers.json")
    assert lines[0] in answers
    top = [re.fullmatch(r"\s+(\d+\.\d\d)%\s+(.+)", line) for line in lines[1:]]
    assert len(top) == 5 and all(top), lines
    percents = [float(m.group(1)) for m in top]
    assert percents == sorted(percents, reverse=True) and sum(percents) <= 100.05
    assert top[0].group(2) == lines[0] and all(m.group(2) in answers for m in top)
    expected = vlfuse.load(trained_run.model_dir).predict(image, question)
    assert lines[0] == expected.answer
    assert percents == pytest.approx([100 * p for _, p in expected.top], abs=0.006)


def test_cli_data_shapes_writes_the_layout(cli, tmp_path):
    out = tmp_path / "generated"
    result = cli("data", "shapes", out, "--images", "6", "--questions-per-image", "2", "--size", "32", "--seed", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = read_json(out / "dataset.json")
    assert manifest["arguments"]["images"] == 6 and manifest["arguments"]["seed"] == 3
    total = 0
    for split in ("train", "val", "test"):
        for name in (f"vqa/{split}_questions.json", f"vqa/{split}_annotations.json",
                     f"captions/captions_{split}.json", f"scenes/{split}_scenes.json"):
            assert (out / name).is_file(), name
        images = sorted((out / "images" / split).glob("*.png"))
        questions = read_json(out / "vqa" / f"{split}_questions.json")["questions"]
        assert len(images) == manifest["splits"][split]["images"]
        assert len(questions) == manifest["splits"][split]["questions"] == 2 * len(images)
        total += len(images)
        assert f"{split} {len(images)} images / {len(questions)} questions" in result.stdout
    assert total == 6


# --------------------------------------------------------------------------- bad input through the CLI

@pytest.fixture
def bad_input(trained_run, shapes_root, write_config, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(first_test_question(shapes_root)[0].read_bytes()[:120])  # a PNG cut short
    image, _ = first_test_question(shapes_root)
    config = write_config(tmp_path / "tiny.yaml", shapes_root, tmp_path / "run")
    bad_yaml = tmp_path / "bad_type.yaml"
    bad_yaml.write_text(config.read_text().replace("batch_images: 4", "batch_images: four"))
    assert bad_yaml.read_text() != config.read_text()
    model = trained_run.model_dir
    # case -> (argv, strings the one error line must contain)
    return {
        "unknown config key": (["train", config, "--set", "train.lr_rate=1"], ["train.lr_rate"]),
        "unknown model key": (["train", config, "--set", "model.fusion.headz=2"], ["model.fusion.headz", "heads"]),
        "wrong type (--set)": (["train", config, "--set", "train.epochs=two"], ["train.epochs", "integer", "two"]),
        "wrong type (yaml)": (["train", bad_yaml], ["train.batch_images", "four"]),
        "missing config file": (["train", tmp_path / "nope.yaml"], [str(tmp_path / "nope.yaml"), "not found"]),
        "predict missing image": (["predict", model, "--image", tmp_path / "nope.png", "--question", "What?"],
                                  [str(tmp_path / "nope.png"), "not found"]),
        "predict corrupt png": (["predict", model, "--image", corrupt, "--question", "What?"],
                                [str(corrupt), "corrupt"]),
        "predict empty question": (["predict", model, "--image", image, "--question", "  "], ["question", "empty"]),
        "eval missing model dir": (["eval", tmp_path / "no_model"], [str(tmp_path / "no_model")]),
    }


BAD_CASES = ["unknown config key", "unknown model key", "wrong type (--set)", "wrong type (yaml)",
             "missing config file", "predict missing image", "predict corrupt png", "predict empty question",
             "eval missing model dir"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_gives_one_line_error(case, bad_input, cli_main):
    argv, culprits = bad_input[case]
    assert_one_line_error(cli_main(*argv), *culprits)


@pytest.mark.parametrize("case", ["unknown config key", "predict corrupt png"])
def test_bad_input_in_a_real_process(case, bad_input, cli):
    argv, culprits = bad_input[case]
    assert_one_line_error(cli(*argv), *culprits)


def _damage_train_split(root: Path, corrupt: bool = True, missing: bool = True) -> dict:
    """Truncate train image 5 and/or delete train image 9 of a copy of the tiny data."""
    damaged = {}
    if corrupt:
        png = root / "images" / "train" / "train_000005.png"
        png.write_bytes(png.read_bytes()[:100])
        damaged["corrupt"] = png
    if missing:
        png = root / "images" / "train" / "train_000009.png"
        png.unlink()
        damaged["missing"] = png
    return damaged


def test_training_skips_bad_images_and_counts_them(copy_shapes, tiny_config, tmp_path):
    from vlfuse.tasks import train

    root = copy_shapes()
    damaged = _damage_train_split(root)
    config = tiny_config(root, tmp_path / "run", "train.epochs=1", "data.on_bad_sample=skip")
    result = train(config, progress=False)
    assert (result.model_dir / "model.safetensors").is_file() and result.test_metrics is not None
    run = read_json(tmp_path / "run" / "run.json")
    assert run["steps"] == math.ceil((TRAIN_IMAGES - 2) / BATCH)
    assert run["train"]["images"] == TRAIN_IMAGES - 2 and run["train"]["questions"] == 4 * (TRAIN_IMAGES - 2)
    skipped = run["train"]["skipped"]
    # Counted in questions: the missing image's 4 (from the reader) and the corrupt image's 4 (dataset).
    assert skipped["count"] == 8
    reasons = "\n".join(skipped["reasons"])
    assert str(damaged["corrupt"]) in reasons and "corrupt or truncated" in reasons
    assert "image not found for image_id 9" in reasons
    assert run["val"]["skipped"]["count"] == 0


@pytest.mark.parametrize("bad", ["corrupt", "missing"])
def test_training_stops_on_bad_image_under_error_policy(bad, copy_shapes, write_config, cli_main, tmp_path):
    root = copy_shapes()
    damaged = _damage_train_split(root, corrupt=bad == "corrupt", missing=bad == "missing")
    config = write_config(tmp_path / "tiny.yaml", root, tmp_path / "run", "data.on_bad_sample=error")
    result = cli_main("train", config)
    if bad == "corrupt":
        assert_one_line_error(result, str(damaged["corrupt"]), "corrupt")
    else:  # the reader looks images up by id, so it names the id, the folder and the questions file
        assert_one_line_error(result, "image_id 9", str(root / "images" / "train"), "train_questions.json")
    assert not (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_answer_outside_the_answer_list_counts_as_wrong(trained_run, copy_shapes, write_config, cli_main,
                                                        tmp_path):
    root = copy_shapes()
    path = root / "vqa" / "test_annotations.json"
    doc = read_json(path)
    target = doc["annotations"][0]
    target["multiple_choice_answer"] = "Purple"
    target["answers"] = [{"answer": "Purple", "answer_confidence": "yes", "answer_id": 1}]
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert "purple" not in read_json(trained_run.model_dir / "answers.json")
    config = write_config(tmp_path / "data.yaml", root, tmp_path / "unused")
    out = tmp_path / "eval.json"
    result = cli_main("eval", trained_run.model_dir, "--data", config, "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = read_json(out)
    assert metrics["unanswerable"] == 1
    assert metrics["overall"]["count"] == 4  # still counted ...
    records = [json.loads(line) for line in (tmp_path / "eval_predictions.jsonl").read_text().splitlines()]
    record = next(r for r in records if r["question_id"] == target["question_id"])
    assert record["truth"] == "purple" and record["correct"] is False  # ... and always wrong
    assert metrics["overall"]["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / 4)
    assert metrics["overall"]["accuracy"] <= 0.75


# --------------------------------------------------------------------------- resume after a kill

# `vlfuse train` with a hook: logs the images of every training step, and sleeps in each step from
# step VLFUSE_TEST_SLOW_FROM on, so the test can kill it mid-epoch. Sleeping changes no arithmetic.
DRIVER = r"""
import hashlib, json, os, sys, time
from vlfuse.tasks.vqa import module
_step = module.VQAModule.training_step
def training_step(self, batch, batch_idx):
    with open(os.environ["VLFUSE_TEST_STEP_LOG"], "a") as f:
        f.write(json.dumps({"step": self.global_step, "epoch": self.current_epoch, "images":
                            [hashlib.md5(i.numpy().tobytes()).hexdigest() for i in batch["images"]]}) + "\n")
    if self.global_step >= int(os.environ.get("VLFUSE_TEST_SLOW_FROM", "1000000")):
        time.sleep(float(os.environ.get("VLFUSE_TEST_SLEEP", "0")))
    return _step(self, batch, batch_idx)
module.VQAModule.training_step = training_step
from vlfuse.cli import main
sys.argv = ["vlfuse", *sys.argv[1:]]
main()
"""


def _driver(base_env: dict, args: list, log: Path, output: Path, **env) -> subprocess.Popen:
    environment = {**base_env, "VLFUSE_TEST_STEP_LOG": str(log), **{k: str(v) for k, v in env.items()}}
    with output.open("w") as out:
        return subprocess.Popen([sys.executable, "-c", DRIVER, *map(str, args)], stdout=out,
                                stderr=subprocess.STDOUT, env=environment)


def _steps(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


@pytest.fixture(scope="module")
def interrupted(shapes_root, write_config, cli_environment, tmp_path_factory):
    """A `vlfuse train` process SIGKILLed mid-epoch once its checkpoint shows >= 2 steps done."""
    from vlfuse.config import load_config
    from vlfuse.errors import ConfigError
    from vlfuse.train.checkpoint_io import load_checkpoint_file
    from vlfuse.tasks import train

    root = tmp_path_factory.mktemp("resume")
    out = root / "run"
    config = write_config(root / "tiny.yaml", shapes_root, out, *DROPOUT)
    last = out / "checkpoints" / "last.ckpt"
    proc = _driver(cli_environment, ["train", config], root / "steps_killed.jsonl", root / "killed.log",
                   VLFUSE_TEST_SLOW_FROM=2, VLFUSE_TEST_SLEEP=1.5)
    seen, step, deadline = None, 0, time.monotonic() + 240
    try:
        while step < 2:
            if proc.poll() is not None:
                pytest.fail(f"training ended (rc {proc.returncode}) before it could be killed:\n"
                            + (root / "killed.log").read_text())
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint with 2 steps within 240 s:\n" + (root / "killed.log").read_text())
            if last.is_file() and last.stat().st_mtime_ns != seen:
                seen = last.stat().st_mtime_ns
                step = load_checkpoint_file(last)["global_step"]
            time.sleep(0.05)
        # A second run on the same out_dir while the first trains is refused and touches nothing.
        try:
            train(load_config(config), progress=False)
            concurrent = None
        except ConfigError as exc:
            concurrent = str(exc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    checkpoint = load_checkpoint_file(last)
    # Training again into the interrupted run's out_dir, without --resume, must be refused.
    try:
        train(load_config(config), progress=False)
        refusal = None
    except ConfigError as exc:
        refusal = str(exc)
    return {"config": config, "out": out, "root": root, "env": cli_environment, "returncode": proc.returncode,
            "killed_step": checkpoint["global_step"], "killed_epoch": checkpoint["epoch"], "refusal": refusal,
            "concurrent": concurrent, "pid": proc.pid}


@pytest.fixture(scope="module")
def resumed(interrupted):
    root = interrupted["root"]
    proc = _driver(interrupted["env"], ["train", interrupted["config"], "--resume"], root / "steps_resumed.jsonl",
                   root / "resumed.log")
    proc.wait(timeout=300)
    output = (root / "resumed.log").read_text()
    assert proc.returncode == 0, output
    return {**interrupted, "output": output}


def test_kill_leaves_a_mid_epoch_checkpoint(interrupted):
    assert interrupted["returncode"] == -signal.SIGKILL
    # Killed inside epoch 0 (4 steps), so the resumed run must start mid-epoch.
    assert 2 <= interrupted["killed_step"] < STEPS_PER_EPOCH and interrupted["killed_epoch"] == 0
    assert not (interrupted["out"] / "run.json").exists()


def test_a_concurrent_run_on_the_same_out_dir_is_refused(interrupted):
    assert interrupted["concurrent"] is not None, "a second run trained into a running run's out_dir"
    assert "in use by another training run" in interrupted["concurrent"]
    assert f"pid {interrupted['pid']}" in interrupted["concurrent"]


def test_training_into_an_interrupted_run_without_resume_is_refused(interrupted):
    assert interrupted["refusal"] is not None, "a second run overwrote the interrupted one"
    assert str(interrupted["out"]) in interrupted["refusal"] and "--resume" in interrupted["refusal"]


def test_resume_completes_with_the_same_step_count(resumed, cli_reference):
    assert "Model saved to" in resumed["output"]
    run, reference = read_json(resumed["out"] / "run.json"), read_json(cli_reference["out"] / "run.json")
    assert run["steps"] == reference["steps"] == EPOCHS * STEPS_PER_EPOCH
    assert run["epochs_completed"] == reference["epochs_completed"] == EPOCHS
    assert run["interrupted"] is False
    assert (resumed["out"] / "eval.json").is_file()


def test_resumed_run_trains_every_image_once_per_epoch(resumed):
    root = resumed["root"]
    done = resumed["killed_step"]
    steps = [s for s in _steps(root / "steps_killed.jsonl") if s["step"] < done] + _steps(
        root / "steps_resumed.jsonl")
    assert [s["step"] for s in steps] == list(range(EPOCHS * STEPS_PER_EPOCH))
    for epoch in range(EPOCHS):
        seen = Counter(h for s in steps if s["epoch"] == epoch for h in s["images"])
        repeated = {h: n for h, n in seen.items() if n > 1}
        assert not repeated and len(seen) == TRAIN_IMAGES, (
            f"epoch {epoch}: {len(seen)} distinct images of {TRAIN_IMAGES}, {len(repeated)} trained twice")


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(resumed, cli_reference):
    from safetensors.torch import load_file

    resumed_weights = load_file(str(resumed["out"] / "model" / "model.safetensors"))
    reference = load_file(str(cli_reference["out"] / "model" / "model.safetensors"))
    assert list(resumed_weights) == list(reference)
    differ = {k: (resumed_weights[k] - reference[k]).abs().max().item() for k in reference
              if not torch.equal(resumed_weights[k], reference[k])}  # bit for bit
    assert not differ, f"{len(differ)} of {len(reference)} tensors differ, max {max(differ.values()):.3g}"


def test_resumed_run_logs_each_step_once(resumed, cli_reference):
    def rows(out: Path) -> list[dict]:
        with (out / "logs" / "metrics.csv").open(newline="") as f:
            return list(csv.DictReader(f))

    steps = [r["step"] for r in rows(resumed["out"]) if r["train_loss"]]
    assert steps == [str(s) for s in range(EPOCHS * STEPS_PER_EPOCH)], steps
    assert rows(resumed["out"]) == rows(cli_reference["out"])
    assert sorted(p.name for p in (resumed["out"] / "checkpoints").iterdir()) == []  # no last-v1.ckpt


def test_resume_without_a_checkpoint_is_refused(shapes_root, write_config, cli_main, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", shapes_root, tmp_path / "fresh")
    line = assert_one_line_error(cli_main("train", config, "--resume"), "--resume",
                                 str(tmp_path / "fresh" / "checkpoints" / "last.ckpt"))
    assert "no checkpoint" in line
    assert not (tmp_path / "fresh" / "model").exists()


def test_training_into_a_finished_run_without_resume_is_refused(trained_run, write_config, shapes_root, cli_main,
                                                                  tmp_path):
    out = Path(shutil.copytree(trained_run.out_dir, tmp_path / "finished"))
    before = (out / "model" / "model.safetensors").read_bytes()
    config = write_config(tmp_path / "tiny.yaml", shapes_root, out, "train.epochs=1")
    result = cli_main("train", config)
    assert result.returncode == 2 and "already holds a finished run" in result.stderr
    assert (out / "model" / "model.safetensors").read_bytes() == before


def test_finished_run_keeps_no_checkpoint_to_resume(trained_run):
    """A finished run leaves no last.ckpt behind (train removes it once the planned steps are done), hence the
    run.json guard."""
    assert not (trained_run.out_dir / "checkpoints" / "last.ckpt").exists()


# --------------------------------------------------------------------------- DDP on CPU (slow)

@pytest.mark.slow
def test_ddp_two_processes_on_cpu(cli, shapes_root, write_config, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", shapes_root, tmp_path / "run", "train.epochs=1")
    result = cli("train", config, "--set", "train.accelerator=cpu", "--set", "train.devices=2", "--set",
                 "train.strategy=ddp", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "Traceback" not in result.stderr
    run = read_json(tmp_path / "run" / "run.json")
    # Each process takes half the images: ceil(ceil(14 / 2) / 4) = 2 steps for one epoch.
    assert run["steps"] == math.ceil(math.ceil(TRAIN_IMAGES / 2) / BATCH) and run["interrupted"] is False
    image, question = first_test_question(shapes_root)
    prediction = vlfuse.load(tmp_path / "run" / "model").predict(image, question)
    assert prediction.answer in read_json(tmp_path / "run" / "model" / "answers.json")
    assert read_json(tmp_path / "run" / "eval.json")["overall"]["count"] == 4


@pytest.mark.parametrize("config_path", [BASE_CONFIG, REPO / "src" / "vlfuse" / "configs" / "demo.yaml"],
                         ids=["benchmark", "demo"])
def test_shipped_configs_train_and_reload_exactly(config_path, shapes_root, tmp_path):
    """The configs we publish (region encoder, cross-attention) go through the whole pipeline."""
    from vlfuse.config import load_config
    from vlfuse.models.saved import load_model_dir
    from vlfuse.tasks import train

    config = load_config(config_path, [f"data.root={shapes_root}", f"out_dir={tmp_path / 'run'}", "data.image_size=32",
                                       "train.epochs=1", "train.batch_images=8", "train.progress_bar=false",
                                       "train.accelerator=cpu", "model.dim=32", "train.max_minutes=null"])
    result = train(config, progress=False)
    assert result.test_metrics["overall"]["count"] > 0
    saved = load_model_dir(result.model_dir)
    assert saved.config.model.image_encoder["name"] == "regions"
    assert torch.equal(_logits(saved, shapes_root), _logits(load_model_dir(result.model_dir), shapes_root))
