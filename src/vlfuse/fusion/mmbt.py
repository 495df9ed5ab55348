"""MMBT: a pretrained text transformer reads image tokens as extra words (Kiela et al. 2019,
"Supervised Multimodal Bitransformers for Classifying Images and Text").

Joint sequence: [CLS] img_1..img_k [SEP] then the text tokens as its tokenizer made them ([CLS] ...
[SEP]), each segment with its own positions (counted from 0 over its real tokens, so padding never
shifts one) and segment id (image 1, text 0). The whole pretrained transformer runs over it; pooled =
the first [CLS] state (pool="mean": the mean of every real state) projected to dim. freeze=True fixes
the pretrained part; the image projection, boundary vectors and output projection still train.

How it fits `forward(image, text)`: MMBT needs the text's input embeddings, not finished features.
So the model is split where it must be, and no weight is held twice:
- the text encoder is `PretrainedTextEncoder(embeddings_only=True)`: the word-embedding lookup only,
  in the model's hidden size;
- this fusion owns everything else of the same model (position and segment embeddings, their
  LayerNorm, the layers) and runs it through the public `forward(inputs_embeds=...)`, so the image
  tokens share the text's position and segment tables, as in the paper. Its own [CLS]/[SEP] vectors
  start from the pretrained word embeddings of those tokens.
VisionLanguageModel checks the pairing (same model folder, text encoder in embeddings mode), so a
model composed by hand is checked as well as one from a config.

Attention weights (need_weights=True) come from the model's output_attentions, per layer:
`layer{i}.joint` [B, heads, T, T] over the joint sequence as laid out above (T = 2 + image tokens +
text tokens; row 0 is the pooled [CLS] query; rollout reads these), and its cross-modal blocks
`text_to_image` [B, heads, text, image] and `image_to_text`, each renormalised over its keys, so they
read "where, within the other modality, a query looks".
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..encoders.hf_text import load_pretrained, resolve_model_path
from ..types import Features, FusionOutput, masked_mean


def _special_ids(folder: Path) -> tuple[int | None, int | None]:
    """Ids of [CLS] and [SEP] in the folder's tokenizer, None where unknown."""
    if not (folder / "tokenizer.json").is_file():
        return None, None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")


class MMBTFusion(nn.Module):
    token_layout = ("cls", "image", "sep", "text")  # [CLS], the image tokens, [SEP], the words
    accepts_image_index = False
    reads_text_embeddings = True  # pairs with PretrainedTextEncoder(embeddings_only=True), see models/vlm.py
    accepts_graph = False

    def __init__(self, dim: int = 128, path: str | None = None, pool: Literal["cls", "mean"] = "cls",
                 freeze: bool = False):
        super().__init__()
        self.path = resolve_model_path(path, "model.fusion.path")
        # Eager attention is the one implementation that returns weights in every transformers
        # version; the joint sequence is short (tens of tokens), so a fused kernel gains little.
        bert = load_pretrained(self.path, attn_implementation="eager")
        config = bert.config
        words = bert.get_input_embeddings().weight.detach()
        boundary = []
        for token_id in _special_ids(self.path):
            init = words[token_id].clone() if token_id is not None else torch.randn(config.hidden_size) * 0.02
            boundary.append(nn.Parameter(init))
        self.start, self.end = boundary
        bert.set_input_embeddings(None)  # the text encoder holds the word embeddings
        if getattr(bert, "pooler", None) is not None:
            bert.pooler = None  # pooled comes from our own projection
        bert.requires_grad_(not freeze)
        self.bert, self.pool, self.freeze = bert, pool, freeze
        self.hidden_size, self.max_positions = config.hidden_size, config.max_position_embeddings
        self.image_type = min(1, config.type_vocab_size - 1)
        self.image_proj = nn.Linear(dim, config.hidden_size)
        self.out = nn.Linear(config.hidden_size, dim)

    def train(self, mode: bool = True) -> "MMBTFusion":
        super().train(mode)
        if self.freeze:
            self.bert.eval()
        return self

    def forward(self, image: Features, text: Features, need_weights: bool = False) -> FusionOutput:
        b, nv = image.mask.shape
        nt = text.mask.shape[1]
        if text.tokens.shape[-1] != self.hidden_size:
            raise ValueError(f"MMBT reads the text model's input embeddings ({self.hidden_size}-d), got "
                             f"{text.tokens.shape[-1]}-d text tokens: use a pretrained text encoder with "
                             "embeddings_only: true and the same path")
        if max(nv + 2, nt) > self.max_positions:
            raise ValueError(f"MMBT: {nv} image tokens + [CLS]/[SEP] or {nt} text tokens exceed the model's "
                             f"{self.max_positions} positions")
        one = image.mask.new_ones(b, 1)
        x = torch.cat([self.start.expand(b, 1, -1), self.image_proj(image.tokens),
                       self.end.expand(b, 1, -1), text.tokens], 1)
        mask = torch.cat([one, image.mask, one, text.mask.bool()], 1)
        image_count = image.mask.long().cumsum(1)  # real image token j sits at position 1 + j
        positions = torch.cat([torch.zeros_like(image_count[:, :1]), image_count,
                               image_count[:, -1:] + 1, (text.mask.long().cumsum(1) - 1).clamp_min(0)], 1)
        types = torch.cat([torch.full((b, nv + 2), self.image_type, device=x.device),
                           torch.zeros(b, nt, dtype=torch.long, device=x.device)], 1)
        out = self.bert(inputs_embeds=x, attention_mask=mask.long(), token_type_ids=types,
                        position_ids=positions, output_attentions=need_weights)
        h = out.last_hidden_state
        pooled = h[:, 0] if self.pool == "cls" else masked_mean(h, mask)
        attentions = self._blocks(out.attentions, nv) if need_weights else {}
        return FusionOutput(self.out(pooled), self.out(h), attentions)

    @staticmethod
    def _blocks(layers: tuple[torch.Tensor, ...], nv: int) -> dict[str, torch.Tensor]:
        image, text = slice(1, 1 + nv), slice(2 + nv, None)
        result = {}
        for i, w in enumerate(layers):  # w: [B, heads, T, T]
            result[f"layer{i}.joint"] = w
            for name, (queries, keys) in {"text_to_image": (text, image), "image_to_text": (image, text)}.items():
                part = w[:, :, queries, keys]
                result[f"layer{i}.{name}"] = part / part.sum(-1, keepdim=True).clamp_min(1e-12)
        return result
