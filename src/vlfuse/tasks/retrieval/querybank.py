"""Query-bank normalisation: the inverted softmax of QB-Norm (Bogolin et al., CVPR 2022).

Some gallery items are "hubs": close to many queries, so they win queries that are not theirs. With
a bank of training queries, a candidate c of query q scores

    beta * cos(q, c) - log sum_{b in bank} exp(beta * cos(b, c))

so a candidate that every bank query likes is discounted. Text -> image: the gallery is images and
the bank holds training captions; image -> text: the gallery is captions and the bank holds
training images. The bank is embedded once, when training ends, and kept with the model
(`querybank.safetensors`), so evaluation needs no training data, and never the test queries.
"""

from __future__ import annotations

from pathlib import Path

import torch

BANK_FILE = "querybank.safetensors"


def save_querybank(model_dir: Path, images: torch.Tensor, texts: torch.Tensor) -> None:
    """Store the bank's unit embeddings: images [Bi, E] and texts [Bt, E]."""
    from safetensors.torch import save_file

    save_file({"images": images.float().contiguous(), "texts": texts.float().contiguous()},
              str(Path(model_dir) / BANK_FILE))


def load_querybank(model_dir: Path) -> dict[str, torch.Tensor] | None:
    """{"images", "texts"} of the model's bank, or None when it was trained without one."""
    from safetensors.torch import load_file

    path = Path(model_dir) / BANK_FILE
    return load_file(str(path)) if path.is_file() else None


def bank_norm(bank: torch.Tensor, gallery: torch.Tensor, beta: float, chunk: int = 4096) -> torch.Tensor:
    """log sum_b exp(beta * cos(b, g)) for each gallery row g [G, E] -> [G] (in chunks: banks are large)."""
    return torch.cat([torch.logsumexp(beta * (gallery[s: s + chunk] @ bank.T), 1)
                      for s in range(0, len(gallery), chunk)]) if len(gallery) else gallery.new_zeros(0)


def normalised_scores(images: torch.Tensor, texts: torch.Tensor, bank: dict[str, torch.Tensor], beta: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(image -> text scores [I, T], text -> image scores [I, T]) of unit embeddings, bank-normalised."""
    scaled = beta * (images @ texts.T)
    i2t = scaled - bank_norm(bank["images"], texts, beta)[None, :]  # gallery: the captions
    t2i = scaled - bank_norm(bank["texts"], images, beta)[:, None]  # gallery: the images
    return i2t, t2i
