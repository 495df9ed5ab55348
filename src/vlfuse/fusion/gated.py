"""Gated modality attention: a per-example soft choice between the image and the text.

s_i     = w^T tanh(W_i x_i + b_i)          one score per modality i in {image, text}
alpha_i = softmax_i(s_i)                   the modality weights, summing to 1 over the two
pooled  = sum_i alpha_i P_i x_i

x_i is modality i's pooled vector. This is the gated multimodal unit (Arevalo et al., "Gated
Multimodal Units for Information Fusion", ICLR 2017 workshop), h = z h_v + (1 - z) h_t, with one
gate per example instead of one per dimension: with two modalities, softmax over (s_v, s_t) is
z = sigmoid(s_v - s_t). The scoring form is the modality attention of Hori et al.,
"Attention-Based Multimodal Fusion for Video Description", ICCV 2017.

With token_attention=True, x_i is first an attention pool over modality i's real tokens,
a_n = softmax_n(u_i^T tanh(A_i h_n)) with padded tokens masked out, x_i = sum_n a_n h_n, instead of
the encoder's pooled vector.

need_weights returns attentions["modality_weights"] [B, 2] (image, text) and, with token
attention, "image_tokens" [B, Nv] and "text_tokens" [B, Nt].
"""

from __future__ import annotations

import torch
from torch import nn

from ..types import Features, FusionOutput


def _scorer(dim: int, hidden: int) -> nn.Sequential:
    # no bias on the last layer: softmax ignores a shared shift, so that bias would never learn
    return nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))


class GatedModalityAttention(nn.Module):
    token_layout = None  # pooled only: no token sequence
    accepts_image_index = False
    reads_text_embeddings = False
    accepts_graph = False

    def __init__(self, dim: int = 128, hidden: int = 128, token_attention: bool = False):
        super().__init__()
        self.image_score, self.text_score = nn.Linear(dim, hidden), nn.Linear(dim, hidden)  # W_i, b_i
        self.score = nn.Linear(hidden, 1, bias=False)  # w, shared by the modalities so scores compare
        self.image_proj, self.text_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)  # P_i
        self.token_pools = nn.ModuleList([_scorer(dim, hidden), _scorer(dim, hidden)]) if token_attention else None

    @staticmethod
    def _attention_pool(scorer: nn.Module, f: Features) -> tuple[torch.Tensor, torch.Tensor]:
        weights = scorer(f.tokens).squeeze(-1).masked_fill(~f.mask, float("-inf")).softmax(-1)  # [B, N]
        return (weights.unsqueeze(-1) * f.tokens).sum(1), weights

    def forward(self, image: Features, text: Features, need_weights: bool = False) -> FusionOutput:
        attentions = {}
        if self.token_pools is None:
            v, t = image.pooled, text.pooled
        else:
            v, image_w = self._attention_pool(self.token_pools[0], image)
            t, text_w = self._attention_pool(self.token_pools[1], text)
            if need_weights:
                attentions.update(image_tokens=image_w, text_tokens=text_w)
        scores = torch.cat([self.score(torch.tanh(self.image_score(v))),
                            self.score(torch.tanh(self.text_score(t)))], -1)  # [B, 2]
        alpha = scores.softmax(-1)
        pooled = alpha[:, :1] * self.image_proj(v) + alpha[:, 1:] * self.text_proj(t)
        if need_weights:
            attentions["modality_weights"] = alpha
        return FusionOutput(pooled, None, attentions)
