"""CaptioningModel: an image encoder and a caption decoder, each passed in."""

from __future__ import annotations

import torch
from torch import nn

from ..config import Config
from ..heads.generation import Generated, beam_search, greedy_search
from ..types import Features
from .inputs import encode_images


class CaptioningModel(nn.Module):
    """images -> image Features -> decoder (teacher forcing, or greedy / beam search)."""

    def __init__(self, image_encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.image_encoder, self.decoder = image_encoder, decoder

    def encode_images(self, images: torch.Tensor | None, image_features: torch.Tensor | None = None) -> Features:
        """Images (or a frozen encoder's cached output, data.feature_cache) -> Features: models.inputs."""
        return encode_images(self.image_encoder, images, image_features)

    def forward(self, images: torch.Tensor | None, input_ids: torch.Tensor, image_index: torch.Tensor | None = None,
                image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: logits [B_c, L, V], position t predicting input_ids[:, t + 1].

        image_index [B_c] says which image each caption belongs to (each image encoded once for
        all of its captions); without it, images and captions pair up row by row.
        """
        image = self.encode_images(images, image_features)
        if image_index is not None:
            image = image.index_select(image_index)
        return self.decoder(image, input_ids)

    @torch.no_grad()
    def generate(self, images: torch.Tensor | None, bos: int, eos: int, max_length: int, beam_size: int = 1,
                 length_penalty: float = 0.0, blocked: tuple[int, ...] = (),
                 image_features: torch.Tensor | None = None) -> Generated:
        """One caption per image: greedy search for beam_size 1, else beam search (heads.generation)."""
        image = self.encode_images(images, image_features)
        if beam_size == 1:
            return greedy_search(self.decoder, image, bos, eos, max_length, blocked)
        return beam_search(self.decoder, image, bos, eos, max_length, beam_size, length_penalty, blocked)


def generation_length(config: Config) -> int:
    """Tokens to generate at most, EOS included: captioning.max_length, or the longest caption that
    training sees (data.max_question_length counts BOS and EOS; BOS is given, not generated)."""
    return config.captioning.max_length or max(1, config.data.max_question_length - 1)


def decoder_positions(config: Config) -> int:
    """Token positions the decoder reads: a training caption's, or BOS + all but the last generated token."""
    return max(config.data.max_question_length, generation_length(config))
