"""A saved model is a directory: config.yaml, model.safetensors, tokenizer.json, answers.json.

Loading rebuilds the model from the config through the factory and fills in the weights; nothing
in the directory is executed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..config import Config, load_config, to_dict
from ..data.answers import AnswerVocab
from ..errors import DataError

CONFIG, WEIGHTS, TOKENIZER, ANSWERS = "config.yaml", "model.safetensors", "tokenizer.json", "answers.json"


@dataclass
class SavedModel:
    model: nn.Module
    config: Config
    tokenizer: object
    answers: AnswerVocab


def save_vocabularies(path: str | Path, config: Config, tokenizer, answers: AnswerVocab) -> Path:
    """Everything but the weights: written before training so a resumed run keeps the same ids."""
    import yaml

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG).write_text(yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True), encoding="utf-8")
    tokenizer.save(str(path / TOKENIZER))
    answers.save(path / ANSWERS)
    return path


def save_model_dir(path: str | Path, model: nn.Module, config: Config, tokenizer, answers: AnswerVocab) -> Path:
    from safetensors.torch import save_model

    path = save_vocabularies(path, config, tokenizer, answers)
    save_model(model, str(path / WEIGHTS))
    return path


def load_model_dir(path: str | Path, *, weights: bool = True) -> SavedModel:
    from safetensors.torch import load_model

    from ..data.tokenizer import load_tokenizer
    from .factory import build_model

    path = Path(path)
    needed = [CONFIG, TOKENIZER, ANSWERS] + ([WEIGHTS] if weights else [])
    for name in needed:
        if not (path / name).is_file():
            raise DataError(f"not a vlfuse model directory: {name} is missing", path=path)
    config = load_config(path / CONFIG)
    tokenizer = load_tokenizer(path / TOKENIZER)
    answers = AnswerVocab.load(path / ANSWERS)
    model = build_model(config, tokenizer.get_vocab_size(), len(answers))
    if weights:
        try:
            load_model(model, str(path / WEIGHTS))
        except Exception as exc:  # wrong shapes or a damaged file: say which file
            raise DataError(f"weights do not fit the config ({exc})", path=path / WEIGHTS) from None
    model.eval()
    return SavedModel(model, config, tokenizer, answers)
