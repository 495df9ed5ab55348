"""How long a fusion takes to bind a word to an object, on a synthetic task with no encoders.

Each image is `objects` tokens, each the sum of a colour and a shape embedding (all colours
distinct); the text is [start, colour word, end]; the answer is the shape of the object of that
colour. A fusion that lets words read objects solves it in one attention step. It prints, per
fusion and seed, the first step whose training loss falls below `--loss`.

    python -m bench.binding_probe [--fusions cross_attention,single_stream] [--seeds 0 1]
    python -m bench.binding_probe --fusions single_stream --options '{"readout": "words"}'
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from torch import nn

from vlfuse.models.factory import FUSIONS
from vlfuse.types import Features

DIM, OBJECTS, COLOURS, SHAPES, BATCH = 64, 6, 6, 3, 128


def binding_batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(object colours [B, K], object shapes [B, K], boxes [B, K, 4], the asked object [B])."""
    colours = torch.stack([torch.randperm(COLOURS, generator=generator)[:OBJECTS] for _ in range(BATCH)])
    shapes = torch.randint(0, SHAPES, (BATCH, OBJECTS), generator=generator)
    corner = torch.rand(BATCH, OBJECTS, 2, generator=generator) * 0.8
    asked = torch.randint(0, OBJECTS, (BATCH,), generator=generator)
    return colours, shapes, torch.cat([corner, corner + 0.1], -1), asked


def steps_to_bind(fusion_name: str, seed: int, steps: int, loss_below: float, options: dict | None = None) -> int | None:
    """The first step at which the training loss is below `loss_below`, or None within `steps`."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    colour, shape, word = nn.Embedding(COLOURS, DIM), nn.Embedding(SHAPES, DIM), nn.Embedding(COLOURS + 2, DIM)
    fusion, head = FUSIONS[fusion_name](DIM, layers=2, heads=4, **(options or {})), nn.Linear(DIM, SHAPES)
    modules = nn.ModuleList([colour, shape, word, fusion, head])
    optimizer = torch.optim.AdamW(modules.parameters(), lr=1e-3)
    rows = torch.arange(BATCH)
    for step in range(steps):
        colours, shapes, boxes, asked = binding_batch(generator)
        objects = F.layer_norm(colour(colours) + shape(shapes), (DIM,))
        start, end = torch.full((BATCH,), COLOURS), torch.full((BATCH,), COLOURS + 1)
        text_ids = torch.stack([start, colours[rows, asked], end], 1)
        words = F.layer_norm(word(text_ids), (DIM,))
        image = Features(objects, torch.ones(BATCH, OBJECTS, dtype=torch.bool), objects.mean(1), boxes)
        text = Features(words, torch.ones(BATCH, 3, dtype=torch.bool), words.mean(1))
        loss = F.cross_entropy(head(fusion(image, text).pooled), shapes[rows, asked])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < loss_below:
            return step + 1
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fusions", default="cross_attention,single_stream")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--loss", type=float, default=0.3)
    parser.add_argument("--options", type=json.loads, default={}, help="the fusions' keyword arguments, as JSON")
    args = parser.parse_args()
    for name in args.fusions.split(","):
        for seed in args.seeds:
            found = steps_to_bind(name, seed, args.steps, args.loss, args.options)
            print(f"{name:16} seed {seed}: loss < {args.loss} at step "
                  f"{found if found is not None else f'> {args.steps}'}")


if __name__ == "__main__":
    main()
