"""A pre-trained model directory: the backbone (what `--init` loads) in model.safetensors, the objectives'
heads beside it."""

from __future__ import annotations

from pathlib import Path

from ...config import Config
from ...data.tokenizer import load_tokenizer
from ...errors import DataError
from ...models.pretrain import PretrainModel, build_pretrain_model
from ...models.saved import CONFIG, TOKENIZER, WEIGHTS, checked_model_dir, save_vocabularies

HEADS = "pretrain_heads.safetensors"


def save_pretrained_dir(path: Path, model: PretrainModel, config: Config, tokenizer) -> Path:
    from safetensors.torch import save_model

    path = save_vocabularies(path, config, tokenizer, None)
    save_model(model.backbone(), str(path / WEIGHTS))
    save_model(model.heads, str(path / HEADS))
    return path


def load_pretrained_dir(path: str | Path) -> tuple[PretrainModel, Config, object]:
    """(model with its heads, config, tokenizer) of a directory `vlfuse pretrain` wrote."""
    from safetensors.torch import load_model

    path = Path(path)
    config = checked_model_dir(path, [CONFIG, TOKENIZER, WEIGHTS, HEADS], "pretrain", "a pre-trained model directory")
    tokenizer = load_tokenizer(path / TOKENIZER)
    model = build_pretrain_model(config, tokenizer)
    for part, name in ((model.backbone(), WEIGHTS), (model.heads, HEADS)):
        try:
            load_model(part, str(path / name))
        except Exception as exc:  # wrong shapes or a damaged file: say which file
            raise DataError(f"weights do not fit the config ({exc})", path=path / name) from None
    return model.eval(), config, tokenizer
