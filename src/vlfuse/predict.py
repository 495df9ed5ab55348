"""The Python face of a trained model: `vlfuse.load(MODEL_DIR)` returns a Predictor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .data.formats.common import check_question
from .data.images import load_image, load_image_bytes
from .data.tokenizer import encode_ids, pad_ids
from .data.vqa_dataset import image_to_tensor
from .models.saved import SavedModel, load_model_dir


@dataclass
class Prediction:
    answer: str
    confidence: float
    top: list[tuple[str, float]]  # (answer, probability), most likely first


class Predictor:
    def __init__(self, saved: SavedModel):
        self.saved = saved
        self.model, self.config, self.tokenizer, self.answers = saved.model, saved.config, saved.tokenizer, saved.answers

    def _image(self, image) -> torch.Tensor:
        from PIL import Image

        if isinstance(image, (bytes, bytearray)):
            image = load_image_bytes(bytes(image))
        elif isinstance(image, (str, Path)):
            image = load_image(image)
        elif isinstance(image, Image.Image):
            image = image.convert("RGB")
        else:
            raise TypeError(f"image must be a path, bytes or a PIL image, not {type(image).__name__}")
        return image_to_tensor(image, self.config.data.image_size)

    @torch.no_grad()
    def predict(self, image, question: str, top_k: int = 5) -> Prediction:
        """Answer one question about one image (a path, raw bytes or a PIL image)."""
        return self.predict_many(image, [question], top_k)[0]

    @torch.no_grad()
    def predict_many(self, image, questions: list[str], top_k: int = 5) -> list[Prediction]:
        """Several questions about the same image, encoding the image once."""
        questions = [check_question(q) for q in questions]
        ids, mask = pad_ids(encode_ids(self.tokenizer, questions, self.config.data.max_question_length))
        device = next(self.model.parameters()).device
        images = self._image(image).unsqueeze(0).to(device)
        index = torch.zeros(len(questions), dtype=torch.long, device=device)
        logits, _ = self.model.eval()(images, ids.to(device), mask.to(device), index)
        probs = logits.float().softmax(-1)
        values, indices = probs.topk(min(top_k, probs.shape[-1]), -1)
        results = []
        for row_values, row_indices in zip(values.tolist(), indices.tolist()):
            top = [(self.answers[i], p) for i, p in zip(row_indices, row_values)]
            results.append(Prediction(top[0][0], top[0][1], top))
        return results


def load(model_dir: str | Path, device: str = "cpu") -> Predictor:
    """Rebuild a saved model directory (config.yaml + model.safetensors + vocabularies)."""
    saved = load_model_dir(model_dir, task="vqa")  # a retrieval model answers no questions
    saved.model.to(device)
    return Predictor(saved)
