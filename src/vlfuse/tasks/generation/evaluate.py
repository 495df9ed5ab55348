"""Task generation's evaluation: draw one image per held-out caption (the best of generation.candidates
when generation.ranker picks) and check it against the caption.

Faithfulness (vlfuse.tasks.generation.faithfulness): every named object found with the right colour,
shape and place, as precision / recall over objects. Two references beside it: the same score of the
VQ-VAE's reconstructions of the real images (the ceiling the codes allow) and, with
generation.retrieval_model, each generated image's R@1 against its caption among 100 captions of the
split (its own and the 99 around it), ranked by that retrieval model's embedding similarity, next to
the real images' R@1 under the same model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...config import Config
from ...data.loading import read_split
from ...data.images import image_to_tensor, load_image
from ...errors import DataError
from ...progress import track
from ..base import write_eval_json
from .faithfulness import read_caption, read_images, score
from .predict import Generator, generate_tensors, load_generator
from .rank import Ranker

RETRIEVAL_POOL = 100


def held_out(config: Config, split: str) -> tuple[list[str], list]:
    """(first caption, sample) of each captioned image of the split."""
    read = read_split(config.data, split)
    samples = [s for s in read.samples if s.captions]
    if not samples:
        from ...train.run import EmptySplitError

        raise EmptySplitError(f"the {split} split has no captioned images")
    return [s.captions[0] for s in samples], samples


def named_objects(captions: list[str]) -> list:
    try:
        return [read_caption(c) for c in captions]
    except ValueError as exc:
        raise DataError(f"faithfulness reads the built-in shapes captions only: {exc}") from None


def evaluate_generation(generator: Generator, config: Config, split: str, progress: bool = True,
                        limit: int | None = None) -> tuple[dict, torch.Tensor, list[str]]:
    """(metrics, generated images [N, 3, S, S], their captions) for the split's first `limit` captions."""
    captions, samples = held_out(config, split)
    captions, samples = captions[:limit], samples[:limit]
    named = named_objects(captions)
    batch, size = config.generation.eval_batch, config.data.image_size
    starts = range(0, len(captions), batch)
    images = torch.cat([generate_tensors(generator, captions[s: s + batch], config.seed + s, batch)
                        for s in track(starts, f"Generating {split} images", total=len(starts), enabled=progress)])
    real = torch.stack([image_to_tensor(load_image(s.image_path), size) for s in samples]).float() / 255
    with torch.no_grad():
        reconstructed = generator.model.vqvae.decode(generator.model.vqvae.encode(real))
    g = config.generation
    metrics = {"task": "generation", "split": split, "images": len(captions), "temperature": g.temperature,
               "top_k": g.top_k, "guidance": g.guidance, "candidates": g.candidates,
               "ranker": g.ranker if g.candidates > 1 else None, "seed": config.seed,
               "generated": score(named, read_images(images), size),
               "vq_reconstruction": score(named, read_images(reconstructed), size)}
    if g.retrieval_model:
        judge = Ranker(g.retrieval_model)
        metrics["retrieval"] = {"model": g.retrieval_model, "pool": RETRIEVAL_POOL,
                                "generated_r1": retrieval_r1(judge, images, captions),
                                "real_r1": retrieval_r1(judge, real, captions),
                                # the images were picked by this very model: its R@1 is then not a fair test
                                "judge_is_ranker": metrics["ranker"] is not None
                                and Path(g.ranker).resolve() == Path(g.retrieval_model).resolve()}
    return metrics, images, captions


def retrieval_r1(ranker: Ranker, images: torch.Tensor, captions: list[str]) -> float:
    """Share of images whose own caption ranks first among the 100 of its block of the split (first-stage
    embedding similarity of a trained retrieval model)."""
    image_emb, text_emb = ranker.embed_images(images), ranker.embed_texts(captions)
    hits = 0
    for i in range(len(images)):
        start = min(max(0, i - RETRIEVAL_POOL // 2), max(0, len(images) - RETRIEVAL_POOL))
        pool = range(start, min(len(images), start + RETRIEVAL_POOL))
        similarity = text_emb[list(pool)] @ image_emb[i]
        hits += int(list(pool)[int(similarity.argmax())] == i)
    return hits / len(images)


def evaluate_generation_split(model_dir: Path, config: Config, split: str, out_json: Path | None,
                              progress: bool = True) -> dict:
    """Generate for every caption of `split`, score, and write the metrics to `out_json`."""
    generator = load_generator(model_dir)
    # the run's own settings for the data; sampling and the retrieval model from `config` (eval's --set)
    generator.config.generation = config.generation
    metrics, _, _ = evaluate_generation(generator, config, split, progress)
    return write_eval_json(out_json, metrics)
