"""The blind answer-prior baselines of a VQA config's data beside a trained model's accuracy.

    python -m bench.vqa_prior CONFIG [--split val] [--eval runs/x/eval_val.json] [--set key=value ...]

Prints the accuracy of answering every `split` question with the most common training answer
(overall, per question type, per question text), and, with --eval, the model's exact-match accuracy per question
type from the eval JSON that `vlfuse eval` wrote: how much of the score the image buys.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlfuse.config import load_config
from vlfuse.data.loading import read_split
from vlfuse.metrics.vqa import answer_prior_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--eval", type=Path, help="an eval JSON of a model on the same split")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    data = load_config(args.config, args.overrides).data
    pairs = {name: [(s.question_type, s.question, s.answer) for s in read_split(data, name).samples
                    if s.answer is not None] for name in ("train", args.split)}
    result = answer_prior_accuracy(pairs["train"], pairs[args.split])
    model = json.loads(args.eval.read_text(encoding="utf-8")) if args.eval else None
    print(f"{args.split}: {len(pairs[args.split])} questions")
    print(f"  prior (always '{result['prior']['answer']}'): {100 * result['prior']['accuracy']:.1f}%")
    typed = result["per_question_type_prior"]
    line = f"  per-question-type prior: {100 * typed['accuracy']:.1f}%"
    print(line + (f"   model: {100 * model['overall']['accuracy']:.1f}%" if model else ""))
    print(f"  per-question prior (same question text): {100 * result['per_question_prior']['accuracy']:.1f}%")
    for t, r in typed["types"].items():
        mine = model["families"].get(t) if model else None
        print(f"    {t:22} {r['count']:5}  prior '{r['answer']}' {100 * r['accuracy']:5.1f}%"
              + (f"   model {100 * mine['accuracy']:5.1f}%" if mine else ""))


if __name__ == "__main__":
    main()
