"""RetrievalEncoder: a saved retrieval model as the index sees it: images and texts in, unit vectors out.

Embeddings are float32 numpy arrays (what FAISS takes); the model's dot products are cosines, so
an inner-product index ranks exactly as the model's own first stage does. A model trained with a
query bank (retrieval.querybank) also gives each image its bank term (`image_bias`), so that the index
ranks text -> image as evaluation does.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..data.formats.common import MAX_QUESTION_CHARS
from ..data.tokenizer import encode_ids, pad_ids
from ..data.images import image_tensor
from ..errors import DataError
from ..models.saved import SavedModel, load_model_dir
from .fingerprint import model_fingerprint


def check_text(text) -> str:
    """A text query stripped of surrounding whitespace; DataError naming the field if it is unusable."""
    if not isinstance(text, str):
        raise DataError(f"must be a string, got {type(text).__name__}", field="text")
    text = text.strip()
    if not text:
        raise DataError("empty text", field="text")
    if len(text) > MAX_QUESTION_CHARS:
        raise DataError(f"text too long: {len(text)} characters (max {MAX_QUESTION_CHARS})", field="text")
    return text


class RetrievalEncoder:
    def __init__(self, saved: SavedModel, fingerprint: str, model_dir: Path | None = None):
        self.saved, self.model, self.config = saved, saved.model.eval(), saved.config
        self.fingerprint, self.model_dir = fingerprint, model_dir

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu") -> "RetrievalEncoder":
        """A saved retrieval model (vlfuse.predict.load_encoder also opens exported ones)."""
        model_dir = Path(model_dir).resolve()
        saved = load_model_dir(model_dir, task="retrieval")
        saved.model.to(device)
        return cls(saved, model_fingerprint(model_dir), model_dir)

    @property
    def dim(self) -> int:
        return self.model.head.image_proj.out_features

    @property
    def can_rerank(self) -> bool:
        return self.model.can_rerank

    @property
    def logit_scale(self) -> float:
        """The learned scale of the ITC logits (1 / temperature): the first stage's unit in re-ranking."""
        return float(self.model.head.scale)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @cached_property
    def querybank(self) -> dict[str, torch.Tensor] | None:
        """The bank kept with the model (querybank.safetensors) when its config ranks with one, else None."""
        from ..tasks.retrieval.querybank import load_querybank

        if not self.config.retrieval.querybank or self.model_dir is None:
            return None
        return load_querybank(self.model_dir)

    def image_bias(self, vectors: np.ndarray) -> np.ndarray:
        """Per unit image embedding, log sum_b exp(beta cos(b, image)) / beta over the bank's captions b:
        cos(q, image) - bias ranks text -> image as the bank-normalised scores do (they are beta times it)."""
        from ..tasks.retrieval.querybank import bank_norm

        beta = self.config.retrieval.querybank_beta
        return (bank_norm(self.querybank["texts"], torch.from_numpy(vectors), beta) / beta).numpy()

    def image_tensor(self, image) -> torch.Tensor:
        """One image as the model's input: uint8 [3, S, S]."""
        return image_tensor(image, self.config.data.image_size)

    def text_ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        texts = [check_text(t) for t in texts]
        return pad_ids(encode_ids(self.saved.tokenizer, texts, self.config.data.max_question_length))

    @torch.no_grad()
    def embed_image_tensors(self, images: torch.Tensor) -> np.ndarray:
        """uint8 [B, 3, S, S] -> unit embeddings [B, E] float32 (averaged with the mirror's: flip_average)."""
        return self.model.embed_images(images.to(self.device)).float().cpu().numpy()

    def embed_images(self, images: list) -> np.ndarray:
        return self.embed_image_tensors(torch.stack([self.image_tensor(i) for i in images]))

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        ids, mask = self.text_ids(texts)
        features = self.model.encode_texts(ids.to(self.device), mask.to(self.device))
        return self.model.head.embed_text(features).float().cpu().numpy()

    @torch.no_grad()
    def match(self, images: torch.Tensor, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One text against images uint8 [B, 3, S, S]: (cosine similarity [B], the model's re-ranking score [B] of
        each image as the text query's candidate: RetrievalModel.rerank_scores)."""
        model = self.model
        ids, mask = self.text_ids([text])
        images = images.to(self.device)
        image = model.encode_images(images)
        text_features = model.encode_texts(ids.to(self.device), mask.to(self.device))
        image_emb, text_emb = model.embed_images(images, encoded=image), model.head.embed_text(text_features)
        similarity = (image_emb @ text_emb.T)[:, 0].float().cpu().numpy()
        rows = torch.zeros(len(images), dtype=torch.long, device=self.device)
        return similarity, model.rerank_scores(image, text_features.index_select(rows))[1].float().cpu().numpy()
