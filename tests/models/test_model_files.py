"""A model directory's files: the tokenizer's sha256 is saved beside it and checked on every load, and a
missing, invalid or swapped tokenizer.json, or a question with a byte that is not UTF-8, is a one-line
error naming what is wrong, never a traceback (the CLI checks run `vlfuse` in this process, except the
one that must pass raw bytes on a real command line)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env
from helpers import assert_one_line_error
from vlfuse.config import load_config
from vlfuse.data.tokenizer import build_tokenizer, load_tokenizer
from vlfuse.errors import DataError


@pytest.fixture
def model_copy(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run.model_dir, tmp_path / "model"))


@pytest.fixture
def image(shapes_root) -> Path:
    return sorted((shapes_root / "images" / "train").iterdir())[0]


def test_the_tokenizer_is_saved_with_its_sha256(trained_run, tmp_path):
    from vlfuse.data.tokenizer import save_tokenizer

    model_dir = trained_run.model_dir
    digest = hashlib.sha256((model_dir / "tokenizer.json").read_bytes()).hexdigest()
    assert (model_dir / "tokenizer.sha256").read_text() == f"{digest}  tokenizer.json\n"  # `sha256sum -c` reads it
    tokenizer = save_tokenizer(build_tokenizer(["what colour is it"]), tmp_path / "tokenizer.json")
    assert load_tokenizer(tokenizer).token_to_id("colour") is not None


def test_a_tokenizer_with_swapped_ids_is_refused(model_copy, image, cli_main):
    """Same size, two ids swapped: the model would load and answer differently; the sha256 says no."""
    path = model_copy / "tokenizer.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    vocab = doc["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[2:4]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    path.write_text(json.dumps(doc), encoding="utf-8")
    (model_copy / "tokenizer.sha256").rename(model_copy / "kept.sha256")
    assert load_tokenizer(path).get_vocab_size() == len(vocab)  # without the digest it would pass unnoticed
    (model_copy / "kept.sha256").rename(model_copy / "tokenizer.sha256")

    import vlfuse

    with pytest.raises(DataError, match="is not the tokenizer this model was saved with") as info:
        vlfuse.load(model_copy)
    assert info.value.path == str(path)
    assert_one_line_error(cli_main("predict", model_copy, "--image", image, "--question", "What shape?"),
                          str(path), "tokenizer.sha256", "restore the original file")


def test_an_invalid_tokenizer_file_is_a_one_line_error(model_copy, image, cli_main):
    (model_copy / "tokenizer.json").write_text('{"model": ', encoding="utf-8")
    result = cli_main("predict", model_copy, "--image", image, "--question", "What shape?")
    assert_one_line_error(result, str(model_copy / "tokenizer.json"), "not a valid tokenizer file")


class Stop(Exception):
    """Raised from a training step: the run ends there, leaving its last checkpoint (a crash)."""


def test_resume_without_the_tokenizer_names_the_file(write_config, shapes_root, tmp_path, cli_main, monkeypatch):
    from vlfuse.tasks.vqa import module
    from vlfuse.tasks import train

    step = module.VQAModule.training_step

    def stop_at_step_2(self, batch, batch_idx):
        if self.global_step >= 2:
            raise Stop
        return step(self, batch, batch_idx)

    out = tmp_path / "run"
    config = write_config(tmp_path / "config.yaml", shapes_root, out)
    with monkeypatch.context() as patch:
        patch.setattr(module.VQAModule, "training_step", stop_at_step_2)
        with pytest.raises(Stop):
            train(load_config(config), progress=False)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    (out / "model" / "tokenizer.json").unlink()
    result = cli_main("train", config, "--resume")
    assert_one_line_error(result, str(out / "model" / "tokenizer.json"), "tokenizer file not found")


def test_a_question_byte_that_is_not_utf8_is_a_one_line_error(trained_run, image):
    """On a real command line (raw bytes in argv): Python keeps the byte as a surrogate, which the
    tokenizer would refuse with a TypeError; the question check names it instead."""
    args = [sys.executable, "-m", "vlfuse.cli", "predict", str(trained_run.model_dir), "--image", str(image),
            "--question", b"What shape is \xff?"]
    result = subprocess.run(args, capture_output=True, text=True, env=cli_env(), timeout=300)
    assert_one_line_error(result, "[question]", "byte 0xff that is not UTF-8", "character 15")
