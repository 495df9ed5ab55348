"""The Python face of a vqa_mc model: pick the answer to a question about an image from its choices.

    from vlfuse.tasks.vqa_mc.predict import load
    chooser = load("runs/vqa_mc_shapes/model")
    chooser.choose("scene.png", "What shape is the red object?", ["circle", "square", "triangle"]).answer
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ...data.formats.common import check_choices, check_question
from ...data.tokenizer import pad_ids
from ...data.images import image_tensor
from ...models.saved import SavedModel, load_model_dir
from .data import encode_pairs


@dataclass
class Choice:
    answer: str  # the highest-scoring candidate
    index: int  # its place in the candidates as given
    ranked: list[tuple[str, float, float]]  # (candidate, match log-odds, softmax over the candidates), best first


class Chooser:
    def __init__(self, saved: SavedModel):
        self.saved, self.model, self.config, self.tokenizer = saved, saved.model, saved.config, saved.tokenizer

    @torch.no_grad()
    def choose(self, image, question: str, choices: list[str]) -> Choice:
        """The best of `choices` (at least two, distinct) for `question` about `image` (a path, bytes or PIL image)."""
        question = check_question(question)
        choices = list(check_choices(list(choices), field="choices"))
        device = next(self.model.parameters()).device
        ids, mask = pad_ids(encode_pairs(self.tokenizer, [question] * len(choices), choices,
                                         self.config.data.max_question_length))
        images = image_tensor(image, self.config.data.image_size).unsqueeze(0)
        scores, _ = self.model.eval().choice_scores(images.to(device), ids.to(device), mask.to(device),
                                                    torch.zeros(len(choices), dtype=torch.long, device=device),
                                                    torch.arange(len(choices), device=device)[None])
        scores = scores[0].cpu()
        probs = scores.softmax(-1)
        order = scores.argsort(descending=True, stable=True).tolist()
        return Choice(choices[order[0]], order[0], [(choices[i], float(scores[i]), float(probs[i])) for i in order])


def load(model_dir: str | Path, device: str = "cpu") -> Chooser:
    saved = load_model_dir(model_dir, task="vqa_mc")
    saved.model.to(device)
    return Chooser(saved)
