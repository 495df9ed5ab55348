"""DialogueModel: image encoder + text encoder (question, history, answers) + fusion + decoder.

The encoder reads the image, the question and the dialogue history: question and history tokens
(each encoded by the text encoder, marked by a learned segment embedding) form one text stream for
the fusion, so with an attention fusion the question's words read both the image and the earlier
rounds ("is it on the left?" needs to know what "it" was).

Two decoders (Das et al. 2017):
  discriminative  scores each candidate from the fused output, the question and the history (late
                  fusion of the three, LF) against the candidate's encoding; cross-entropy over them.
  generative      a caption decoder (heads.caption_decoders: Transformer or LSTM with attention) that
                  writes the answer word by word, reading the fused output, the question and
                  history tokens and the image tokens; trained by teacher forcing, candidates
                  ranked by their log-likelihood, and it can write answers of its own (greedy / beam).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..errors import ConfigError
from ..heads.dialogue import PAD_OPTION, PAD_SCORE, DiscriminativeDecoder
from ..types import Features
from .vlm import check_text_input

QUESTION, HISTORY = 0, 1  # segment ids
DIALOGUE_HEADS: dict[str, type[nn.Module]] = {"discriminative": DiscriminativeDecoder}
SCORE_CHUNK = 2048  # candidate sequences scored at once by the generative decoder


@dataclass
class Context:
    """One round's encoding: the parts the discriminative decoder fuses, and the generative memory."""

    parts: list[torch.Tensor]  # fused pooled, question pooled, history pooled: [R, D] each
    memory: Features  # [R, 1 + Lq + Lh + N, D]: fused pooled, question and history tokens, image tokens


class DialogueModel(nn.Module):
    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, fusion: nn.Module,
                 decoder: nn.Module, dim: int, answer_encoder: nn.Module | None = None, generative: bool = False):
        super().__init__()
        check_text_input(text_encoder, fusion)
        if getattr(text_encoder, "embeddings_only", False):
            raise ConfigError("task dialogue encodes questions, history and answers as sentences: "
                              "model.text_encoder.embeddings_only and mmbt do not fit it")
        self.image_encoder, self.text_encoder, self.fusion, self.decoder = image_encoder, text_encoder, fusion, decoder
        self.answer_encoder = answer_encoder  # discriminative: None means answers go through text_encoder
        self.segment = nn.Embedding(2, dim)
        self.generative = generative

    def encode_images(self, images: torch.Tensor) -> Features:
        if images.dtype == torch.uint8:
            images = images.float() / 255
        return self.image_encoder(images)

    def encode_answers(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return (self.answer_encoder or self.text_encoder)(input_ids, attention_mask).pooled

    def context(self, image: Features, question_ids: torch.Tensor, question_mask: torch.Tensor,
                history_ids: torch.Tensor, history_mask: torch.Tensor, image_index: torch.Tensor) -> Context:
        """R rounds' context; image_index [R] picks each round's image row of `image`."""
        question = self.text_encoder(question_ids, question_mask)
        history = self.text_encoder(history_ids, history_mask)
        text = Features(torch.cat([question.tokens + self.segment.weight[QUESTION],
                                   history.tokens + self.segment.weight[HISTORY]], 1),
                        torch.cat([question.mask, history.mask], 1), question.pooled)
        if getattr(self.fusion, "accepts_image_index", False):
            fused = self.fusion(image, text, image_index=image_index)
        else:
            fused = self.fusion(image.index_select(image_index), text)
        parts = [fused.pooled, question.pooled, history.pooled]
        if not self.generative:
            return Context(parts, text)  # the discriminative decoder reads no memory
        rows = image.index_select(image_index)
        first = torch.ones(len(text.mask), 1, dtype=torch.bool, device=text.mask.device)
        memory = Features(torch.cat([fused.pooled[:, None], text.tokens, rows.tokens], 1),
                          torch.cat([first, text.mask, rows.mask], 1), fused.pooled)
        return Context(parts, memory)

    def answer_log_probs(self, memory: Features, answer_ids: torch.Tensor, answer_mask: torch.Tensor
                         ) -> torch.Tensor:
        """Generative: log p(answer | context) [A] of row-aligned memory and answers (BOS w1 .. wn EOS):
        the sum over the answer's tokens after BOS."""
        logits = self.decoder(memory, answer_ids[:, :-1]).float().log_softmax(-1)
        target, real = answer_ids[:, 1:], answer_mask[:, 1:].bool()
        token = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return token.masked_fill(~real, 0.0).sum(1)

    def answer_loss(self, context: Context, answer_ids: torch.Tensor, answer_mask: torch.Tensor,
                    rows: torch.Tensor) -> torch.Tensor:
        """Generative training: token cross-entropy of the answers [A, L] of rounds `rows` [A]."""
        memory = context.memory.index_select(rows)
        logits = self.decoder(memory, answer_ids[:, :-1])
        target = answer_ids[:, 1:].masked_fill(~answer_mask[:, 1:].bool(), -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=-100)

    def score(self, context: Context, answer_ids: torch.Tensor, answer_mask: torch.Tensor, options: torch.Tensor
              ) -> torch.Tensor:
        """Scores [R, C] of each round's candidates (options: [R, C] indices into the answer rows)."""
        if not self.generative:
            return self.decoder(context.parts, self.encode_answers(answer_ids, answer_mask), options)
        rounds = torch.arange(len(options), device=options.device).repeat_interleave(options.shape[1])
        flat = options.flatten().clamp_min(0)
        scores = torch.cat([
            self.answer_log_probs(context.memory.index_select(rounds[s: s + SCORE_CHUNK]),
                                  answer_ids[flat[s: s + SCORE_CHUNK]], answer_mask[flat[s: s + SCORE_CHUNK]])
            for s in range(0, len(flat), SCORE_CHUNK)]).view(options.shape)
        return scores.masked_fill(options == PAD_OPTION, PAD_SCORE)

    def forward(self, images: torch.Tensor, question_ids: torch.Tensor, question_mask: torch.Tensor,
                history_ids: torch.Tensor, history_mask: torch.Tensor, image_index: torch.Tensor,
                answer_ids: torch.Tensor, answer_mask: torch.Tensor, options: torch.Tensor) -> torch.Tensor:
        """Scores [R, C] of each round's candidates (options: [R, C] indices into the answer rows)."""
        context = self.context(self.encode_images(images), question_ids, question_mask, history_ids, history_mask,
                               image_index)
        return self.score(context, answer_ids, answer_mask, options)


def text_length(config: Config) -> int:
    """Positions the text encoder needs: the longest of question, history and answer."""
    d = config.dialogue
    return max(config.data.max_question_length, d.max_history_length, d.max_answer_length)
