"""Task captioning's evaluation: one caption per image by beam search, scored with corpus BLEU-1..4,
ROUGE-L and CIDEr-D against all of its references."""

from __future__ import annotations

import time
from pathlib import Path

from ...config import Config
from ...data.caption_dataset import CaptionDataset
from ...data.feature_cache import feature_loader
from ...data.formats.common import SkipLog
from ...data.loading import read_split
from ...data.records import CaptionSample
from ...errors import DataError
from ...metrics.captioning import caption_metrics
from ...models.captioning import generation_length
from ...models.saved import SavedModel, load_model_dir
from ..base import write_eval_json
from .data import check_captioning_config
from .predict import caption_images


def evaluate_captioning(saved: SavedModel, samples: list[CaptionSample], skip_log: SkipLog, progress: bool = True
                        ) -> tuple[dict, list[dict]]:
    """(metrics, one record per image) of the model's captions for `samples` against their references.
    With saved.config.data.feature_cache, the images' frozen features come from (and go to) that cache."""
    cfg = saved.config
    loader = feature_loader(cfg, saved.model.image_encoder, samples, progress)
    dataset = CaptionDataset(samples, saved.tokenizer, cfg.data.image_size, cfg.data.max_question_length, skip_log,
                             progress=progress, image_loader=loader)
    if len(dataset) == 0:
        raise DataError("no captioned images to evaluate captioning on"
                        + (f" ({skip_log.summary()})" if skip_log.count else ""))
    clock = time.perf_counter()
    captions = caption_images(saved, dataset.images, progress=progress, features=loader is not None)
    seconds = time.perf_counter() - clock
    candidates = [caption for caption, _ in captions]
    references = [list(s.captions) for s in dataset.samples]
    metrics = {"task": "captioning", "images": len(dataset), "references": len(dataset.captions),
               **caption_metrics(candidates, references),
               "decoding": {"beam_size": cfg.captioning.beam_size, "length_penalty": cfg.captioning.length_penalty,
                            "max_length": generation_length(cfg)},
               "seconds": seconds, "uncaptioned": dataset.uncaptioned, "skipped": skip_log.as_dict()}
    records = [{"image": str(s.image_path), "image_id": s.image_id, "caption": caption, "log_prob": score,
                "references": list(s.captions)} for s, (caption, score) in zip(dataset.samples, captions)]
    return metrics, records


def evaluate_captioning_split(model_dir: Path, config: Config, split: str, out_json: Path | None,
                              progress: bool = True) -> dict:
    """Caption one split of `config.data` with the model in `model_dir`; write metrics (+ captions) as JSON.

    Decoding settings come from `config.captioning` (so `vlfuse eval --set captioning.beam_size=1` works).
    """
    check_captioning_config(config)
    read = read_split(config.data, split)
    saved = load_model_dir(model_dir, task="captioning")
    saved.config.captioning = config.captioning
    saved.config.data.feature_cache = config.data.feature_cache
    metrics, records = evaluate_captioning(saved, read.samples, read.skipped, progress)
    return write_eval_json(out_json, {"task": "captioning", "split": split, **metrics}, records, "captions")
