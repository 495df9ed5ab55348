"""Generate-then-rank against its ceiling: how many named objects the best of K samples gets right when
each ranker picks, and when the faithfulness scorer itself picks (the oracle: the most any ranker
could reach with these K samples).

Draws K images for each of the split's first `--limit` captions once (the same draws for every ranker),
then prints one JSON line per picker: the first sample (no ranking), the oracle (the most objects
right, then the fewest found), and each ranker model directory by the cosine of its embeddings.

    python -m bench.generation_rankers runs/generation_shapes/model runs/ranker_shapes/model [more rankers] \
        [--split val] [--candidates 16] [--limit 500]
"""

from __future__ import annotations

import argparse
import json

import torch

from vlfuse.tasks.generation.evaluate import held_out, named_objects
from vlfuse.tasks.generation.faithfulness import match, read_images
from vlfuse.tasks.generation.predict import generate_tensors, load_generator
from vlfuse.tasks.generation.rank import Ranker


def draw(generator_dir: str, split: str, candidates: int, limit: int | None) -> tuple[list[str], torch.Tensor]:
    """(captions, images [T, K, 3, S, S]): K unranked samples a caption, with the model's saved sampling settings."""
    generator = load_generator(generator_dir, candidates=1)
    config = generator.config
    captions = held_out(config, split)[0][:limit]
    drawn = [c for c in captions for _ in range(candidates)]
    batch = config.generation.eval_batch
    images = torch.cat([generate_tensors(generator, drawn[s: s + batch], config.seed + s, batch)
                        for s in range(0, len(drawn), batch)])
    return captions, images.view(len(captions), candidates, *images.shape[1:])


def picked(hits: torch.Tensor, found: torch.Tensor, named: int, scores: torch.Tensor) -> dict:
    rows = torch.arange(len(scores))
    choice = scores.argmax(1)
    correct = float(hits[rows, choice].sum())
    return {"recall": correct / named, "precision": correct / max(1.0, float(found[rows, choice].sum()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generator")
    parser.add_argument("rankers", nargs="*")
    parser.add_argument("--split", default="val")
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    captions, images = draw(args.generator, args.split, args.candidates, args.limit)
    t, k = images.shape[:2]
    flat = images.flatten(0, 1)
    named = named_objects(captions)
    found = read_images(flat)
    size = flat.shape[-1]
    hits = torch.tensor([sum(m is not None for m in match(named[i // k], found[i], size))
                         for i in range(t * k)], dtype=torch.float).view(t, k)
    count = torch.tensor([len(f) for f in found], dtype=torch.float).view(t, k)
    total = sum(map(len, named))
    first = torch.zeros(t, k).index_fill_(1, torch.tensor([0]), 1.0)
    common = {"split": args.split, "captions": t, "candidates": k}
    print(json.dumps({"picker": "first sample", **common, **picked(hits, count, total, first)}), flush=True)
    print(json.dumps({"picker": "oracle", **common, **picked(hits, count, total, hits - 1e-3 * count)}), flush=True)
    drawn = [c for c in captions for _ in range(k)]
    for ranker in args.rankers:
        scores = Ranker(ranker).match(flat, drawn).view(t, k)
        print(json.dumps({"picker": ranker, **common, **picked(hits, count, total, scores)}), flush=True)


if __name__ == "__main__":
    main()
