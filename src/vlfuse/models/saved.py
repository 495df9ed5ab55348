"""A saved model is a directory: config.yaml, model.safetensors, tokenizer.json (with its sha256 in
tokenizer.sha256, checked on load), answers.json (task vqa only: a retrieval model has no answers).

Loading rebuilds the model from the config through the factory and fills in the weights; nothing
in the directory is executed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..config import Config, load_config, to_dict
from ..data.answers import AnswerVocab
from ..data.knowledge_graph import load_saved_knowledge_graph
from ..errors import DataError

CONFIG, WEIGHTS, TOKENIZER, ANSWERS = "config.yaml", "model.safetensors", "tokenizer.json", "answers.json"
ANSWER_TASKS = ("vqa", "matching", "classification")  # classifiers: answers.json holds their classes


@dataclass
class SavedModel:
    model: nn.Module
    config: Config
    tokenizer: object
    answers: AnswerVocab | None  # None for task retrieval
    knowledge_graph: object = None  # data.knowledge_graph.KnowledgeGraph, for a model trained with one


def save_vocabularies(path: str | Path, config: Config, tokenizer, answers: AnswerVocab | None) -> Path:
    """Everything but the weights: written before training so a resumed run keeps the same ids."""
    import yaml

    from ..data.tokenizer import save_tokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG).write_text(yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True), encoding="utf-8")
    save_tokenizer(tokenizer, path / TOKENIZER)  # with its sha256, checked on load
    if answers is not None:
        answers.save(path / ANSWERS)
    return path


def save_model_dir(path: str | Path, model: nn.Module, config: Config, tokenizer,
                   answers: AnswerVocab | None) -> Path:
    from safetensors.torch import save_model

    path = save_vocabularies(path, config, tokenizer, answers)
    save_model(model, str(path / WEIGHTS))
    return path


def checked_model_dir(path: Path, files: list[str], task: str, kind: str = "a vlfuse model directory") -> Config:
    """The config of the model folder `path`, after checking it holds `files` and a model of `task`."""
    for name in files:
        if not (path / name).is_file():
            raise DataError(f"not {kind}: {name} is missing", path=path)
    config = load_config(path / CONFIG)
    if config.task != task:
        raise DataError(f"holds a {config.task} model, not a {task} model", path=path)
    return config


def load_model_dir(path: str | Path, *, weights: bool = True, task: str | None = None) -> SavedModel:
    """Rebuild the model in `path`; `task` (vqa, retrieval), when given, refuses a model of another task."""
    from safetensors.torch import load_model

    from ..data.tokenizer import load_tokenizer
    from .factory import build_task_model

    path = Path(path)
    if not (path / CONFIG).is_file():
        raise DataError(f"not a vlfuse model directory: {CONFIG} is missing", path=path)
    config = load_config(path / CONFIG)
    if task is not None and config.task != task:
        raise DataError(f"holds a {config.task} model, not a {task} model", path=path)
    if config.task == "pretrain":  # encoders + fusion without a task head
        raise DataError(f"holds pre-trained encoders and a fusion, no task head: fine-tune them first with "
                        f"`vlfuse train CONFIG --init {path}`", path=path)
    vqa = config.task in ANSWER_TASKS
    needed = [TOKENIZER] + ([ANSWERS] if vqa else []) + ([WEIGHTS] if weights else [])
    for name in needed:
        if not (path / name).is_file():
            raise DataError(f"not a vlfuse model directory: {name} is missing", path=path)
    tokenizer = load_tokenizer(path / TOKENIZER)
    answers = AnswerVocab.load(path / ANSWERS) if vqa else None
    model = build_task_model(config, tokenizer.get_vocab_size(), None if answers is None else len(answers))
    if weights:
        try:
            load_model(model, str(path / WEIGHTS))
        except Exception as exc:  # wrong shapes or a damaged file: say which file
            raise DataError(f"weights do not fit the config ({exc})", path=path / WEIGHTS) from None
    model.eval()
    return SavedModel(model, config, tokenizer, answers, load_saved_knowledge_graph(path, config))
