"""A trained retrieval model as a judge of generated images: how well each image matches its caption.

Two uses: generate-then-rank (DALL·E's reranking with CLIP: draw `generation.candidates` images per
caption and keep the one `generation.ranker` matches best) and evaluation's R@1 among 100 captions
(`generation.retrieval_model`). Both read the model's first stage, the cosine of its embeddings.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ...data.tokenizer import encode_ids, pad_ids


class Ranker:
    """A saved retrieval model's image and text embeddings (unit vectors), in batches."""

    def __init__(self, model_dir: str | Path, batch: int = 100):
        from ...models.saved import load_model_dir

        self.saved = load_model_dir(model_dir, task="retrieval")
        self.batch = batch

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, S, S] in [0, 1] (resized to the model's image size when S differs) -> [N, E]."""
        model, size = self.saved.model, self.saved.config.data.image_size
        if images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return torch.cat([model.embed_images(images[s: s + self.batch]).float()
                          for s in range(0, len(images), self.batch)])

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """[N, E] for N captions."""
        model, config = self.saved.model, self.saved.config
        ids, mask = pad_ids(encode_ids(self.saved.tokenizer, texts, config.data.max_question_length))
        return torch.cat([model.head.embed_text(model.encode_texts(ids[s: s + self.batch], mask[s: s + self.batch]))
                          .float() for s in range(0, len(ids), self.batch)])

    def match(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """[N] cosine of image i and text i."""
        return (self.embed_images(images) * self.embed_texts(texts)).sum(-1)


def best_of(candidates: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """candidates [T, K, 3, S, S], scores [T, K] -> the best-scored image of each text, [T, 3, S, S]."""
    return candidates[torch.arange(len(candidates)), scores.argmax(1)]
