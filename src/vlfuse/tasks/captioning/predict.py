"""Task captioning's Python face: `vlfuse.load(model_dir).caption("image.png")`, and the decoding that
evaluation, validation and serving share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ...data.caption_tokens import CaptionSpecials, decode_caption
from ...data.images import image_tensor
from ...errors import ConfigError
from ...models.captioning import CaptioningModel, generation_length
from ...models.saved import SavedModel, load_model_dir
from ...progress import track


def caption_images(saved: SavedModel, images: torch.Tensor, beam_size: int | None = None,
                   length_penalty: float | None = None, max_length: int | None = None, batch: int | None = None,
                   progress: bool = False, features: bool = False) -> list[tuple[str, float]]:
    """(caption, summed log-prob) for each of `images` (uint8 [N, 3, S, S], or with `features` the frozen
    image encoder's cached output); settings default to the config's."""
    c = saved.config.captioning
    beam_size = c.beam_size if beam_size is None else beam_size
    length_penalty = c.length_penalty if length_penalty is None else length_penalty
    max_length = generation_length(saved.config) if max_length is None else max_length
    positions = getattr(saved.model.decoder, "max_length", None)
    if positions is not None and max_length > positions:
        raise ConfigError(f"max_length {max_length} is more than the {positions} positions this decoder was "
                          "trained with")
    return decode_captions(saved.model, saved.tokenizer, images, beam_size, length_penalty, max_length,
                           batch or c.eval_batch, progress, features)


def decode_captions(model: CaptioningModel, tokenizer, images: torch.Tensor, beam_size: int, length_penalty: float,
                    max_length: int, batch: int, progress: bool = False, features: bool = False
                    ) -> list[tuple[str, float]]:
    """(caption, summed log-prob) for each of `images` (or cached features), `batch` at a time, in eval mode."""
    specials = CaptionSpecials.of(tokenizer)
    model = model.eval()
    device = next(model.parameters()).device
    out = []
    starts = range(0, len(images), batch)
    for start in track(starts, "Captioning", total=len(starts), enabled=progress):
        chunk = images[start: start + batch].to(device)
        generated = model.generate(None if features else chunk, specials.bos, specials.eos, max_length, beam_size,
                                   length_penalty, specials.blocked, image_features=chunk if features else None)
        out += [(decode_caption(tokenizer, ids), score) for ids, score in zip(generated.ids, generated.log_probs)]
    return out


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
