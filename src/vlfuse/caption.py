"""Captions from a saved captioning model: `vlfuse.load(model_dir).caption("image.png")`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .data.images import image_tensor
from .models.saved import SavedModel, load_model_dir


@dataclass
class CaptionPrediction:
    caption: str
    log_prob: float  # summed log-probability of the generated tokens (EOS included)


class Captioner:
    """A loaded captioning model. Decoding defaults (beam size, length penalty, max length) are the
    saved config's `captioning` section; each call may override them."""

    task = "captioning"

    def __init__(self, saved: SavedModel):
        self.saved = saved
        self.model, self.config, self.tokenizer = saved.model, saved.config, saved.tokenizer

    def _images(self, images) -> torch.Tensor:
        return torch.stack([image_tensor(image, self.config.data.image_size) for image in images])

    def predict_many(self, images: list, beam_size: int | None = None, length_penalty: float | None = None,
                     max_length: int | None = None) -> list[CaptionPrediction]:
        """One caption per image (paths, raw bytes or PIL images), decoded as one batch."""
        from .train.captioning import caption_images

        if isinstance(images, (str, Path, bytes, bytearray)):
            raise TypeError("predict_many takes a list of images; use predict or caption for one")
        if not images:
            return []
        out = caption_images(self.saved, self._images(images), beam_size, length_penalty, max_length)
        return [CaptionPrediction(caption, score) for caption, score in out]

    def predict(self, image, **decoding) -> CaptionPrediction:
        return self.predict_many([image], **decoding)[0]

    def caption(self, image, **decoding) -> str:
        """The caption of one image (a path, raw bytes or a PIL image)."""
        return self.predict(image, **decoding).caption


def load_captioner(model_dir: str | Path, device: str = "cpu") -> Captioner:
    saved = load_model_dir(model_dir, task="captioning")
    saved.model.to(device)
    return Captioner(saved)


def saved_task(model_dir: str | Path) -> str | None:
    """The task a model directory was trained for, or None where there is no readable config (the
    loader then says what is wrong)."""
    from .config import load_config
    from .errors import VLFuseError

    try:
        return load_config(Path(model_dir) / "config.yaml").task
    except VLFuseError:
        return None
