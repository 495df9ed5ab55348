"""Discriminative dialogue decoder: scores each candidate answer against the round's context.

score(round r, candidate c) = <W_c context_r, W_a answer_c> (Das et al. 2017's discriminative
decoder: a dot product between the encoded context and each encoded option, trained with
cross-entropy over the options). Candidates are given as indices into a table of encoded answers,
so an answer shared by many rounds of a batch (VisDial's options repeat a lot) is encoded once.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.dialog_dataset import PAD_OPTION

PAD_SCORE = -1e9  # finite, so ranking metrics accept it; below any real score


class DiscriminativeDecoder(nn.Module):
    def __init__(self, dim: int, context_inputs: int = 3, dropout: float = 0.1):
        super().__init__()
        # Late fusion of the encoder's parts (fused pooled, question, history), as in the LF encoder.
        self.context = nn.Sequential(nn.Dropout(dropout), nn.Linear(context_inputs * dim, dim), nn.Tanh(),
                                     nn.Linear(dim, dim))
        self.answer = nn.Linear(dim, dim)

    def forward(self, context_parts: list[torch.Tensor], answers: torch.Tensor, options: torch.Tensor
                ) -> torch.Tensor:
        """context_parts: [R, D] each; answers: [U, D] pooled answer features; options: [R, C] long
        indices into answers (PAD_OPTION = padding) -> scores [R, C]."""
        context = self.context(torch.cat(context_parts, -1))
        table = context @ self.answer(answers).T  # [R, U]: every answer of the batch against every round
        scores = table.gather(1, options.clamp_min(0))
        return scores.masked_fill(options == PAD_OPTION, PAD_SCORE)
