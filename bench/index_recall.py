"""Text -> image recall of a retrieval model's FAISS index over one split, to set beside `vlfuse eval`'s.

    python -m bench.index_recall runs/retrieval_flickr8k/model configs/retrieval_flickr8k.yaml [--split val]

Indexes every image of the split (`build_index(model, data=CONFIG, split=...)`, exact search), searches
it with every caption of the split (`search_texts`) and prints R@1/5/10 as JSON. A model trained with a
query bank ranks by it in the index as in evaluation, so the numbers should equal eval.json's
`querybank` text -> image recalls; without a bank, its `first_stage` ones.
"""

from __future__ import annotations

import argparse
import json
import time

from vlfuse.config import load_config
from vlfuse.data.loading import read_split
from vlfuse.index import build_index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a trained retrieval model directory")
    parser.add_argument("config", help="the config whose data section names the split")
    parser.add_argument("--split", default="val")
    parser.add_argument("--set", action="append", default=[], dest="set_", help="config overrides, as vlfuse's")
    parser.add_argument("--batch", type=int, default=256, help="captions searched at once")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    index = build_index(args.model, data=args.config, split=args.split, progress=True, set_=args.set_)
    indexed = time.perf_counter() - start
    samples = read_split(load_config(args.config, args.set_).data, args.split).samples
    queries = [(caption, sample.image_id) for sample in samples for caption in sample.captions]
    ranked = []
    for first in range(0, len(queries), args.batch):
        chunk = queries[first: first + args.batch]
        ranked += [[hit.id for hit in row] for row in index.search_texts([c for c, _ in chunk], k=10)]
    recall = {f"t2i_r{k}": round(100 * sum(image in row[:k] for (_, image), row in zip(queries, ranked))
                                 / len(queries), 2) for k in (1, 5, 10)}
    print(json.dumps({"images": len(index), "captions": len(queries), "querybank_beta": index.querybank_beta,
                      **recall, "index_seconds": round(indexed, 1),
                      "search_seconds": round(time.perf_counter() - start - indexed, 1)}))


if __name__ == "__main__":
    main()
