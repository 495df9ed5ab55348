"""Text encoders trained from scratch over a tokenizer's ids: Transformer and BiGRU."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..layers.transformer import TransformerBlock
from ..types import Features, masked_mean


class TransformerTextEncoder(nn.Module):
    """Token + learned position embeddings, then pre-norm transformer blocks; pooled = masked mean."""

    def __init__(self, vocab_size: int, dim: int = 128, layers: int = 2, heads: int = 4,
                 max_length: int = 64, dropout: float = 0.0, pad_id: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.pos = nn.Embedding(max_length, dim)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, dropout=dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Features:
        mask = attention_mask.bool()
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed(input_ids) + self.pos(positions)
        for block in self.blocks:
            x, _ = block(x, mask)
        x = self.norm(x)
        return Features(x, mask, masked_mean(x, mask))


class BiGRUTextEncoder(nn.Module):
    """Bidirectional GRU over packed sequences (padding never reaches the recurrence).

    Token features are the concatenated directions projected to `dim`; pooled = the final states
    of both directions, projected.
    """

    def __init__(self, vocab_size: int, dim: int = 128, layers: int = 1, dropout: float = 0.0, pad_id: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.gru = nn.GRU(dim, dim, layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.token_proj = nn.Linear(2 * dim, dim)
        self.pooled_proj = nn.Linear(2 * dim, dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Features:
        mask = attention_mask.bool()
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(self.embed(input_ids), lengths, batch_first=True, enforce_sorted=False)
        out, last = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])
        final = torch.cat([last[-2], last[-1]], -1)
        return Features(self.token_proj(out), mask, self.pooled_proj(final))
