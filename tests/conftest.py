"""Shared fixtures: a tiny generated dataset, a tiny-config factory, one trained tiny model, CLI runners.

Everything here is sized for a busy 2-core CPU: 16 images of 32 px, 4 questions each, a model of
width 16. Torch is limited to one thread: with another job on the machine, two OpenMP threads
fighting for one free core make a tiny training step ~20x slower.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported anywhere
os.environ.setdefault("MKL_NUM_THREADS", "1")

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
BASE_CONFIG = REPO / "configs" / "vqa_shapes.yaml"


def _shared_data() -> Path:
    """../shared/data beside the checkout (CI), or beside the folder of worktrees that holds it; tests
    that need a set skip when it is absent."""
    candidates = (REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data")
    return next((root for root in candidates if root.is_dir()), candidates[0])


SHARED_DATA = _shared_data()

# The short CPU schedule of every tiny test run.
TINY_TRAIN = [
    "train.progress_bar=false",
    "train.epochs=2",
    "train.batch_images=4",
    "train.warmup_steps=2",
    "train.log_every_n_steps=1",
    "train.accelerator=cpu",
]

TINY_FUSION = "{name: co_attention, layers: 1, heads: 2, dropout: 0.0}"
TINY_HEAD = "{name: classifier, hidden: 16, dropout: 0.0}"


def tiny_model(fusion: str | None = TINY_FUSION, head: str | None = TINY_HEAD, text: bool = True) -> list[str]:
    """The tiny model, every dropout 0 so that two runs of one config do the same arithmetic: width 16,
    32 px images, a one-layer CNN and text Transformer; `fusion` and `head` (YAML flow maps) are the
    parts a task swaps, None (or text=False) leaves that part to the task's own config."""
    return ["model.dim=16",
            "model.image_encoder={name: cnn, channels: [8, 16], layers: 1, heads: 2, dropout: 0.0}",
            *(["model.text_encoder={name: transformer, layers: 1, heads: 2, dropout: 0.0}"] if text else []),
            *([f"model.fusion={fusion}"] if fusion else []),
            *([f"model.head={head}"] if head else []),
            "data.image_size=32"]


CROSS_ATTENTION = "{name: cross_attention, layers: 1, heads: 2, dropout: 0.0}"  # the shipped configs' fusion

# The tiny VQA run: the tiny model on the short schedule, a checkpoint every step.
TINY_OVERRIDES = [*tiny_model(), *TINY_TRAIN, "train.checkpoint_every_n_steps=1"]

# The tiny retrieval run: dual encoder + ITM head, 8-d embeddings, tested on the training images.
RETRIEVAL_TINY = [
    *tiny_model(fusion=CROSS_ATTENTION, head="{name: dual_encoder, embed_dim: 8}"),
    "data.val=null",
    "data.test={annotations: captions/captions_train.json, images: images/train}",
    *TINY_TRAIN,
    "train.max_minutes=null",
    "retrieval.hinge_weight=0.5",
]

# The tiny captioning run: the tiny image encoder and a one-layer Transformer decoder.
CAPTIONING_TINY = [
    *tiny_model(fusion=None, head=None, text=False),
    "model.decoder={name: transformer, layers: 1, heads: 2, dropout: 0.0}",
    "data.val=null",
    *TINY_TRAIN,
    "train.max_minutes=null",
    "captioning.eval_batch=4",
]


def retrieval_config(shapes_root: Path, out_dir: Path, *extra: str):
    """configs/retrieval_shapes.yaml on the tiny shapes data with RETRIEVAL_TINY, then `extra`."""
    from vlfuse.config import load_config

    overrides = [f"data.root={shapes_root}", f"out_dir={out_dir}", *RETRIEVAL_TINY, *extra]
    return load_config(REPO / "configs" / "retrieval_shapes.yaml", overrides)


def captioning_config(shapes_root: Path, out_dir: Path, *extra: str):
    """configs/captioning_shapes.yaml on the tiny shapes data with CAPTIONING_TINY, then `extra`."""
    from vlfuse.config import load_config

    overrides = [f"data.root={shapes_root}", f"out_dir={out_dir}", *CAPTIONING_TINY, *extra]
    return load_config(REPO / "configs" / "captioning_shapes.yaml", overrides)

DATA_IMAGES, DATA_QUESTIONS_PER_IMAGE = 16, 4


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


# --------------------------------------------------------------------------- data and configs

@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """The built-in shapes data, tiny: 16 images (14 train / 1 val / 1 test) x 4 questions, 32 px."""
    from vlfuse.data.shapes import generate

    root = tmp_path_factory.mktemp("shapes")
    generate(root, images=DATA_IMAGES, questions_per_image=DATA_QUESTIONS_PER_IMAGE, size=32, seed=0,
             progress=False)
    return root


@pytest.fixture(scope="session")
def table_root(shapes_root, tmp_path_factory) -> Path:
    """The tiny shapes data with its classification tables (classification_{split}.jsonl, 2 texts per image)."""
    from vlfuse.data.shapes_classification import write_tables

    root = Path(shutil.copytree(shapes_root, tmp_path_factory.mktemp("cls") / "shapes"))
    write_tables(root, per_image=2, seed=0)
    return root


@pytest.fixture
def copy_shapes(shapes_root, tmp_path):
    """A private copy of the tiny dataset, for tests that damage it."""

    def make(name: str = "shapes_copy") -> Path:
        return Path(shutil.copytree(shapes_root, tmp_path / name))

    return make


def tiny_overrides(data_root: Path, out_dir: Path, *extra: str) -> list[str]:
    return [f"data.root={Path(data_root).resolve()}", f"out_dir={Path(out_dir).resolve()}", *TINY_OVERRIDES,
            *extra]


@pytest.fixture(scope="session")
def tiny_config():
    """make(data_root, out_dir, *overrides) -> Config: configs/vqa_shapes.yaml shrunk to the tiny model."""
    from vlfuse.config import load_config

    def make(data_root: Path, out_dir: Path, *extra: str):
        return load_config(BASE_CONFIG, tiny_overrides(data_root, out_dir, *extra))

    return make


@pytest.fixture(scope="session")
def write_config(tiny_config):
    """write(path, data_root, out_dir, *overrides) -> path of a complete YAML config for the CLI."""
    import yaml

    from vlfuse.config import to_dict

    def write(path: Path, data_root: Path, out_dir: Path, *extra: str) -> Path:
        config = tiny_config(data_root, out_dir, *extra)
        path = Path(path)
        path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path

    return write


@dataclass
class TrainedRun:
    out_dir: Path
    model_dir: Path
    config: object
    result: object


@pytest.fixture(scope="session")
def trained_run(shapes_root, tiny_config, tmp_path_factory) -> TrainedRun:
    """One tiny training run through the Python API (2 epochs, 8 steps), shared by many tests.

    Tests must not write into it; copy it (shutil.copytree) to change anything.
    """
    from vlfuse.tasks import train

    out = tmp_path_factory.mktemp("trained") / "run"
    config = tiny_config(shapes_root, out)
    result = train(config, progress=False)
    return TrainedRun(out, out / "model", config, result)


@pytest.fixture(scope="session")
def trained_retrieval(shapes_root, tmp_path_factory) -> TrainedRun:
    """One tiny retrieval run (RETRIEVAL_TINY: dual encoder + ITM head, 8-d embeddings), shared by the
    index and server tests. Tests must not write into it."""
    from vlfuse.tasks import train

    out = tmp_path_factory.mktemp("trained_retrieval") / "run"
    config = retrieval_config(shapes_root, out)
    result = train(config, progress=False)
    return TrainedRun(out, out / "model", config, result)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised BERT as a local model folder (hidden 16, 2 layers, vocab 32, no
    tokenizer): how pretrained-model code is tested without weights or a network."""
    import torch
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny_bert")
    config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    with torch.random.fork_rng():  # leave the tests' own random stream alone
        torch.manual_seed(0)
        BertModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert_words(tiny_bert_dir, tmp_path_factory) -> Path:
    """tiny_bert_dir with a word-level tokenizer.json of a few shapes words (any other word is [UNK]): a
    frozen pretrained text encoder with its own tokenizer, as the real-photo recipes use MiniLM, but
    fast and offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    path = Path(shutil.copytree(tiny_bert_dir, tmp_path_factory.mktemp("tiny_bert_words") / "bert"))
    words = ["[PAD]", "[UNK]", "a", "the", "red", "green", "blue", "circle", "square", "is", "of", "and"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path / "tokenizer.json"))
    return path


@pytest.fixture
def tiny_frozen_in_factory(monkeypatch) -> str:
    """helpers.TinyFrozenEncoder as image encoder "tiny_frozen" (a cacheable frozen encoder); returns the
    override that selects it."""
    from helpers import TinyFrozenEncoder
    from vlfuse.models.factory import IMAGE_ENCODERS

    monkeypatch.setitem(IMAGE_ENCODERS, "tiny_frozen", TinyFrozenEncoder)
    return "model.image_encoder={name: tiny_frozen}"


@pytest.fixture
def no_network(monkeypatch):
    """Every way out to the network fails, as on an offline machine: pretrained parts must not need it."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network unavailable (test)")

    for owner, name in [(socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "create_connection"),
                        (socket, "getaddrinfo")]:
        monkeypatch.setattr(owner, name, refuse)


# --------------------------------------------------------------------------- the CLI

def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "120"
    return env


@pytest.fixture(scope="session")
def cli_environment() -> dict:
    """Environment for CLI subprocesses: finds this checkout's vlfuse, one torch thread."""
    return cli_env()


@pytest.fixture(scope="session")
def cli():
    """cli(*args, timeout=...) -> CompletedProcess of `python -m vlfuse.cli ARGS` in a fresh process."""

    def run(*args, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vlfuse.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, env=cli_env(), cwd=cwd or REPO)

    return run


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli_main(capsys, monkeypatch):
    """cli_main(*args) -> CliResult: `vlfuse.cli.main()` in this process (no second torch import).

    An exception that main() does not turn into a message propagates and fails the test, which is
    what a traceback in a real process would be.
    """
    from vlfuse.cli import main

    def run(*args) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["vlfuse", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run
