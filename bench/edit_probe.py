"""How often a retrieval model prefers an image's own caption to one-token edits of it.

Each caption of the split gets `--edits` edits (vlfuse.data.caption_edits: one token replaced by another
that the training captions show between the same two neighbours, "a red circle" -> "a green circle");
the probe prints, as JSON, the share of (caption, edit) pairs where the image's cosine with its own
caption is the higher, and the share of images whose own caption beats all of its edits. It is what
`retrieval.caption_edits` trains for, measured on held-out images.

    python -m bench.edit_probe runs/retrieval_shapes/model [more model dirs] [--split val] [--edits 4]
"""

from __future__ import annotations

import argparse
import json

import torch

from vlfuse.data.caption_edits import CaptionEdits
from vlfuse.data.images import image_to_tensor, load_image
from vlfuse.data.loading import read_split
from vlfuse.data.tokenizer import encode_ids
from vlfuse.tasks.generation.rank import Ranker


def edit_probe(model_dir: str, split: str, edits: int, seed: int = 0) -> dict:
    ranker = Ranker(model_dir)
    config, tokenizer = ranker.saved.config, ranker.saved.tokenizer
    samples = [s for s in read_split(config.data, split).samples if s.captions]
    training = [c for s in read_split(config.data, "train").samples for c in s.captions]
    length = config.data.max_question_length
    table = CaptionEdits(encode_ids(tokenizer, training, length))
    generator = torch.Generator().manual_seed(seed)
    captions = [s.captions[0] for s in samples]
    edited = [table.edit(ids, generator) for ids in encode_ids(tokenizer, captions, length) for _ in range(edits)]
    if any(e is None for e in edited):
        raise SystemExit("error: some captions of the split have no token the training captions show a substitute for")
    images = torch.stack([image_to_tensor(load_image(s.image_path), config.data.image_size) for s in samples])
    image_emb = ranker.embed_images(images.float() / 255)
    own = (image_emb * ranker.embed_texts(captions)).sum(-1)
    other = (image_emb.repeat_interleave(edits, 0) * ranker.embed_texts([tokenizer.decode(e) for e in edited])
             ).sum(-1).view(-1, edits)
    return {"model": model_dir, "split": split, "images": len(samples), "edits_per_caption": edits,
            "own_above_edit": float((own[:, None] > other).float().mean()),
            "own_above_all_edits": float((own > other.amax(1)).float().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--split", default="val")
    parser.add_argument("--edits", type=int, default=4)
    args = parser.parse_args()
    for model in args.models:
        print(json.dumps(edit_probe(model, args.split, args.edits)), flush=True)


if __name__ == "__main__":
    main()
