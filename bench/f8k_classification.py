"""A real 3-class image + text classification set from Flickr8k, for the classification recipe.

    python -m bench.f8k_classification ../shared/data/flickr8k/dataset_flickr8k.json --out data/f8k_cls

Each example pairs a photo with one human caption; the label says whose caption it is:
  match      one of the photo's own 5 captions;
  similar    a caption of the photo's nearest other photo of the same split, nearest by the TF-IDF
             cosine of their captions (the same kind of scene: "a dog runs on the beach" for a dog in
             a field);
  unrelated  a caption of a photo drawn from the less similar half of the split.
Like sentiment, the label needs both sides (neither the photo nor the text alone tells it) and the
middle class is the hard, ambiguous one: a "similar" caption can be true of the photo too.

Flickr8k's train photos make train.jsonl and val.jsonl (the latter, disjoint photos, is for early
stopping); its val photos make f8k_val.jsonl, the set the numbers are reported on. Negatives come
from photos of the same Flickr8k split (train or val). One example per photo, labels in turn over a seeded shuffle,
so every part is balanced. Flickr8k's test split is not read.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
from collections import Counter
from pathlib import Path

import torch

LABELS = ("match", "similar", "unrelated")


def tfidf_similarity(documents: list[str]) -> torch.Tensor:
    """Cosine similarity [N, N] of the documents' TF-IDF vectors (words seen in at least 2 documents)."""
    tokens = [re.findall(r"[a-z]+", d.lower()) for d in documents]
    df = Counter(w for t in tokens for w in set(t))
    vocab = {w: i for i, w in enumerate(w for w, n in df.items() if n >= 2)}
    rows, cols, vals = [], [], []
    for r, t in enumerate(tokens):
        for w, n in Counter(w for w in t if w in vocab).items():
            rows.append(r)
            cols.append(vocab[w])
            vals.append(n * math.log(len(documents) / df[w]))
    x = torch.zeros(len(documents), len(vocab))
    x[rows, cols] = torch.tensor(vals)
    x = torch.nn.functional.normalize(x, dim=1)
    return x @ x.T


def make_examples(images: list[dict], seed: int) -> list[dict]:
    """One example per image, labels in turn (see the module docstring)."""
    rng = random.Random(seed)
    captions = [[s["raw"].strip() for s in im["sentences"]] for im in images]
    sim = tfidf_similarity([" ".join(c) for c in captions])
    sim.fill_diagonal_(-1.0)
    nearest = sim.argmax(1).tolist()
    median = sim.median(1).values
    order = list(range(len(images)))
    rng.shuffle(order)
    examples = []
    for turn, i in enumerate(order):
        label = LABELS[turn % 3]
        if label == "match":
            source = i
        elif label == "similar":
            source = nearest[i]
        else:
            candidates = (sim[i] < median[i]).nonzero().flatten().tolist()
            if candidates == [i]:  # a tiny split: any photo but itself and its nearest
                candidates = [j for j in range(len(images)) if j not in (i, nearest[i])]
            source = i
            while source == i:  # the diagonal (-1) is below every median: never the photo itself
                source = rng.choice(candidates)
        examples.append({"question_id": f"f8k-{images[i]['filename']}", "image": f"images/{images[i]['filename']}",
                         "text": rng.choice(captions[source]), "label": label})
    return examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("karpathy_json", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=Path, help="image folder (default: images/ beside the JSON)")
    parser.add_argument("--train-images", type=int, default=4000, help="Flickr8k train photos for train.jsonl")
    parser.add_argument("--val-images", type=int, default=600, help="other train photos for val.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    doc = json.loads(args.karpathy_json.read_text(encoding="utf-8"))
    image_dir = (args.images or args.karpathy_json.parent / "images").resolve()
    train = [im for im in doc["images"] if im["split"] == "train"]
    random.Random(args.seed).shuffle(train)
    parts = {"train": make_examples(train, args.seed)[: args.train_images + args.val_images],
             "f8k_val": make_examples([im for im in doc["images"] if im["split"] == "val"], args.seed)}
    parts["val"] = parts["train"][args.train_images:]
    parts["train"] = parts["train"][: args.train_images]
    args.out.mkdir(parents=True, exist_ok=True)
    link = args.out / "images"  # tables name images inside their own folder: link the photos there
    if not link.exists():
        link.symlink_to(image_dir, target_is_directory=True)
    for name, examples in parts.items():
        path = args.out / f"{name}.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in examples), encoding="utf-8")
        print(f"{path}: {len(examples)} examples, {dict(Counter(e['label'] for e in examples))}")


if __name__ == "__main__":
    main()
