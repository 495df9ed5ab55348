"""The Python face of a trained dialogue model: rank candidate answers to a question in context.

    from vlfuse.tasks.dialogue.predict import load_dialogue

    model = load_dialogue("runs/dialogue_shapes/model")
    ranked = model.rank("image.png", "is it on the left?",
                        history=["six shapes: two circles, three squares and one triangle",
                                 ("what shape is the red object?", "a circle")])
    ranked.answer, ranked.top          # 'no, on the right', [('no, on the right', 7.1), ...]

`history` is the caption followed by the earlier rounds, each a (question, answer) pair or one
string. Without `candidates` the model ranks every answer it saw in training (answers.json).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ...data.answers import AnswerVocab
from ...data.dialog_dataset import encode_history, join_history
from ...data.formats.common import check_question
from ...data.tokenizer import encode_ids, pad_ids
from ...data.images import image_tensor
from ...errors import ConfigError, DataError
from ...models.saved import ANSWERS, SavedModel, load_model_dir


@dataclass
class Ranking:
    answer: str  # the best-scoring candidate
    top: list[tuple[str, float]]  # (candidate, score), best first: logits, or log-likelihoods (generative)
    written: str | None = None  # generative models: the answer the decoder writes itself (beam search)


def _history_entries(history: Sequence[str | tuple[str, str]]) -> list[str]:
    entries = []
    for i, entry in enumerate(history):
        if isinstance(entry, str):
            entries.append(entry.strip())
        elif isinstance(entry, (tuple, list)) and len(entry) == 2 and all(isinstance(x, str) for x in entry):
            entries.append(f"{entry[0].strip()} {entry[1].strip()}")
        else:
            raise DataError(f"history[{i}] must be a string or a (question, answer) pair of strings, got "
                            f"{type(entry).__name__}")
    return entries


class DialoguePredictor:
    def __init__(self, saved: SavedModel, answers: list[str] | None):
        self.saved, self.model, self.config, self.tokenizer = saved, saved.model, saved.config, saved.tokenizer
        self.answers = answers

    def _context(self, image, question: str, history: Sequence[str | tuple[str, str]]):
        question = check_question(question)
        device = next(self.model.parameters()).device
        q_ids, q_mask = pad_ids(encode_ids(self.tokenizer, [question], self.config.data.max_question_length))
        h_ids, h_mask = pad_ids(encode_history(self.tokenizer, [join_history(_history_entries(history))],
                                               self.config.dialogue.max_history_length))
        images = image_tensor(image, self.config.data.image_size).unsqueeze(0)
        inputs = (q_ids, q_mask, h_ids, h_mask, torch.zeros(1, dtype=torch.long))
        model = self.model.eval()
        return model.context(model.encode_images(images.to(device)), *(x.to(device) for x in inputs))

    @torch.no_grad()
    def scores(self, image, question: str, history: Sequence[str | tuple[str, str]] = (),
               candidates: Sequence[str] | None = None) -> tuple[list[str], torch.Tensor]:
        """(candidates, their scores [C]) for one round."""
        candidates = list(candidates) if candidates is not None else self.answers
        if not candidates:
            raise ConfigError("no candidate answers: pass candidates (the model directory has no answers.json)")
        candidates = [check_question(c, field="candidate") for c in candidates]
        context = self._context(image, question, history)
        device = next(self.model.parameters()).device
        a_ids, a_mask = pad_ids(encode_ids(self.tokenizer, candidates, self.config.dialogue.max_answer_length))
        options = torch.arange(len(candidates), device=device)[None]
        scores = self.model.score(context, a_ids.to(device), a_mask.to(device), options)[0].float().cpu()
        return candidates, scores

    @torch.no_grad()
    def write(self, image, question: str, history: Sequence[str | tuple[str, str]] = (),
              beam_size: int | None = None) -> str:
        """Generative models: the decoder's own answer (beam search; beam_size 1 is greedy)."""
        from ...data.caption_tokens import CaptionSpecials, decode_caption
        from ...heads.generation import beam_search, greedy_search

        if not self.model.generative:
            raise ConfigError("this dialogue model is discriminative: it ranks candidates but writes no answers "
                              "(train with dialogue.decoder: generative)")
        memory = self._context(image, question, history).memory
        specials, beam = CaptionSpecials.of(self.tokenizer), beam_size or self.config.dialogue.beam_size
        length = self.config.dialogue.max_answer_length - 1  # BOS is given, not written
        args = (self.model.decoder, memory, specials.bos, specials.eos, length)
        found = greedy_search(*args, specials.blocked) if beam == 1 else beam_search(*args, beam, 0.0,
                                                                                    specials.blocked)
        return decode_caption(self.tokenizer, found.ids[0])

    def rank(self, image, question: str, history: Sequence[str | tuple[str, str]] = (),
             candidates: Sequence[str] | None = None, top_k: int | None = None) -> Ranking:
        """The candidates best first (all of them unless top_k)."""
        names, scores = self.scores(image, question, history, candidates)
        order = scores.argsort(descending=True, stable=True).tolist()[:top_k]
        top = [(names[i], float(scores[i])) for i in order]
        written = self.write(image, question, history) if self.model.generative else None
        return Ranking(top[0][0], top, written)


def load_dialogue(model_dir: str | Path, device: str = "cpu") -> DialoguePredictor:
    """Rebuild a saved dialogue model directory (config.yaml + model.safetensors + vocabularies)."""
    saved = load_model_dir(model_dir, task="dialogue")
    saved.model.to(device)
    path = Path(model_dir) / ANSWERS
    return DialoguePredictor(saved, AnswerVocab.load(path).answers if path.is_file() else None)
