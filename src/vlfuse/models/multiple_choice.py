"""The multiple-choice model: image encoder + text encoder + fusion + a match head (ITM-style).

Each (question, candidate) pair is one text fused with the image; the head's match log-odds is
the candidate's score. Scoring the pair inside the fusion (rather than comparing an answer
embedding with the fused question) lets the candidate's words attend to the image with the
question's, and works for any answer text, phrases included (Visual7W's "On the table."), with no
fixed answer list. Each image is still encoded once for all its candidates (image_index).
"""

from __future__ import annotations

import torch

from ..heads.classifier import ClassifierHead
from ..heads.dialogue import PAD_SCORE
from ..heads.retrieval import ITMHead, match_score
from .vlm import VisionLanguageModel

# model.head: both give two logits (no match, match); itm is a single Linear by default.
MC_HEADS = {"itm": ITMHead, "classifier": ClassifierHead}


def candidate_scores(row_scores: torch.Tensor, choice_index: torch.Tensor) -> torch.Tensor:
    """Per-row scores [R] -> each question's candidates' scores [Q, C]; padding (index < 0) scores PAD_SCORE."""
    return row_scores[choice_index.clamp_min(0)].masked_fill(choice_index < 0, PAD_SCORE)


class MultipleChoiceModel(VisionLanguageModel):
    """A VisionLanguageModel whose texts are (question, candidate) pairs and whose head says match / no match."""

    def choice_scores(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      image_index: torch.Tensor, choice_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores [Q, C] of each question's candidates (float), match logits [R, 2] of every row)."""
        logits, _ = self(images, input_ids, attention_mask, image_index)
        return candidate_scores(match_score(logits.float()), choice_index), logits
