"""Task captioning: teacher-forced cross-entropy training; evaluation by beam search against every reference.

Training: each batch holds B images with every caption written for each (an image is encoded once
for all of its captions); the decoder reads BOS w1 ... wn and predicts w1 ... wn EOS, the loss is
cross-entropy over the real tokens (captioning.label_smoothing optional).

Evaluation: one caption per image by beam search (captioning.beam_size, length_penalty,
max_length), scored with corpus BLEU-1..4, ROUGE-L and CIDEr-D against all of the image's reference
captions (metrics.captioning). With captioning.select_on, the val images are captioned the same way
after every validation and the weights of the best-scoring one are kept (captioning.patience stops
early). With data.feature_cache, training and evaluation read the frozen image encoder's cached
output instead of running it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from ..config import CaptioningConfig, Config, TrainConfig
from ..data.caption_dataset import CaptionDataset
from ..data.caption_tokens import CaptionSpecials, build_caption_tokenizer, decode_caption
from ..data.feature_cache import feature_collate, feature_loader
from ..data.formats.common import SkipLog
from ..data.loading import read_split
from ..data.records import CaptionSample
from ..data.tokenizer import load_tokenizer, pad_ids
from ..errors import ConfigError, DataError
from ..metrics.captioning import caption_metrics
from ..models.captioning import CaptioningModel, build_captioning_model, generation_length
from ..models.saved import TOKENIZER, SavedModel, save_model_dir, save_vocabularies
from ..progress import track
from .module import configure_adamw
from .run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped

IGNORE_INDEX = -100


# --------------------------------------------------------------------------- data

class CaptioningDataset(CaptionDataset):
    """Item i = (image i as uint8 [3, S, S], the token ids of every caption of image i)."""

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, list[list[int]]]:
        i = key[0] if isinstance(key, tuple) else key
        return self.images[i], self.caption_ids[self.first_caption[i]: self.first_caption[i + 1]]


def collate_captions(items: list[tuple[torch.Tensor, list[list[int]]]]) -> dict:
    """images [B, 3, S, S]; input_ids / attention_mask [C, L] for the C captions; image_index [C]."""
    captions = [ids for _, group in items for ids in group]
    input_ids, attention_mask = pad_ids(captions)
    image_index = torch.tensor([i for i, (_, group) in enumerate(items) for _ in group], dtype=torch.long)
    return {"images": torch.stack([image for image, _ in items]), "input_ids": input_ids,
            "attention_mask": attention_mask, "image_index": image_index}


def teacher_forcing_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoder input: every token but the last, targets: every token but the first, padding ignored)."""
    targets = input_ids[:, 1:].masked_fill(~attention_mask[:, 1:].bool(), IGNORE_INDEX)
    return input_ids[:, :-1], targets


def caption_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean token cross-entropy over the real target tokens; logits [B, L, V], targets [B, L]."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                           label_smoothing=label_smoothing)


# --------------------------------------------------------------------------- training

class CaptioningModule(L.LightningModule):
    """Teacher-forced training; with `val_captions` (captioning.select_on), each validation also
    captions the val images and the best-scoring weights are kept, restored when training ends."""

    def __init__(self, model: CaptioningModel, task: CaptioningConfig, train_config: TrainConfig, total_steps: int,
                 val_captions: "ValCaptions | None" = None):
        super().__init__()
        self.model, self.task, self.cfg, self.total_steps = model, task, train_config, total_steps
        self.val_captions = val_captions
        self.best = {"score": -math.inf, "epoch": -1, "weights": {}, "stale": 0}

    def _step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, int]:
        inputs, targets = teacher_forcing_targets(batch["input_ids"], batch["attention_mask"])
        logits = self.model(batch.get("images"), inputs, batch["image_index"], batch.get("image_features"))
        loss = caption_loss(logits, targets, self.task.label_smoothing)
        real = targets != IGNORE_INDEX
        accuracy = (logits.argmax(-1) == targets)[real].float().mean()
        return loss, accuracy, int(real.sum())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, accuracy, n = self._step(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        self.log("train_token_acc", accuracy, prog_bar=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, accuracy, n = self._step(batch)
        self.log("val_loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val_token_acc", accuracy, prog_bar=True, batch_size=n, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self.val_captions is None or self.trainer.sanity_checking:
            return
        metrics = self.val_captions.score(self.model, self.task)
        for name in ("bleu_4", "cider_d", self.task.select_on):
            self.log(f"val_{name}", metrics[name], prog_bar=name == self.task.select_on)
        if self._keep_if_best(metrics[self.task.select_on]):
            self.best["stale"] = 0
        else:
            self.best["stale"] += 1
            if self.task.patience is not None and self.best["stale"] >= self.task.patience:
                self.trainer.should_stop = True

    def _keep_if_best(self, score: float) -> bool:
        """Remember the trainable weights if `score` beats the best so far; say whether it did."""
        self.best["validated_step"] = self.global_step
        if score <= self.best["score"]:
            return False
        weights = {n: p.detach().cpu().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        self.best.update(score=score, epoch=self.current_epoch, weights=weights)
        return True

    def on_train_end(self) -> None:
        if self.val_captions is not None and self.best.get("validated_step") != self.global_step:
            # Steps trained after the last validation (train.max_minutes stopped mid-epoch): score them too.
            self._keep_if_best(self.val_captions.score(self.model, self.task)[self.task.select_on])
        if self.best["weights"]:  # the selected weights are the ones exported
            self.model.load_state_dict(self.best["weights"], strict=False)

    # The best weights so far travel in the checkpoint, so a resumed run selects among every epoch.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["caption_selection"] = dict(self.best)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.best = dict(checkpoint.get("caption_selection", self.best))

    def configure_optimizers(self):
        return configure_adamw(self.model, self.cfg, self.total_steps)


class ValCaptions:
    """The val images (or their cached features) and references, captioned and scored on demand."""

    def __init__(self, dataset: CaptionDataset, tokenizer, config: Config, features: bool):
        self.images, self.tokenizer, self.features = dataset.images, tokenizer, features
        self.references = [list(s.captions) for s in dataset.samples]
        self.max_length = generation_length(config)

    def score(self, model: CaptioningModel, task: CaptioningConfig) -> dict[str, float]:
        was_training = model.training
        captions = decode_captions(model, self.tokenizer, self.images, task.beam_size, task.length_penalty,
                                   self.max_length, task.eval_batch, features=self.features)
        model.train(was_training)
        return caption_metrics([c for c, _ in captions], self.references)


def caption_tokenizer(config: Config, samples: list[CaptionSample], model_dir: Path, resume: bool):
    """Resumed: the interrupted run's. Else a word-level one from the training captions, or (captioning.
    tokenizer: pretrained) the pretrained text model's, model.text_encoder.path or all-MiniLM-L6-v2."""
    if resume:  # a resumed run must keep the exact token ids of the interrupted one
        return load_tokenizer(model_dir / TOKENIZER)
    if config.captioning.tokenizer == "pretrained":
        from ..encoders.hf_text import PretrainedTextEncoder

        spec = config.model.text_encoder
        path = spec.get("path") if spec.get("name") == "pretrained" else None
        return load_tokenizer(PretrainedTextEncoder.tokenizer_file(path))
    return build_caption_tokenizer((c for s in samples for c in s.captions), config.captioning.min_word_count)


def _split_summary(dataset: CaptionDataset, read) -> dict:
    return {"images": len(dataset), "captions": len(dataset.captions), "uncaptioned": dataset.uncaptioned,
            "skipped": read.skipped.as_dict()}


def check_captioning_config(config: Config) -> None:
    c = config.captioning
    if c.beam_size < 1:
        raise ConfigError(f"config key 'captioning.beam_size' must be >= 1, got {c.beam_size}")
    if c.max_length is not None and c.max_length < 1:
        raise ConfigError(f"config key 'captioning.max_length' must be >= 1, got {c.max_length}")
    if not 0 <= c.label_smoothing < 1:
        raise ConfigError(f"config key 'captioning.label_smoothing' must be in [0, 1), got {c.label_smoothing}")
    if c.eval_batch < 1:
        raise ConfigError(f"config key 'captioning.eval_batch' must be >= 1, got {c.eval_batch}")
    if c.min_word_count < 1:
        raise ConfigError(f"config key 'captioning.min_word_count' must be >= 1, got {c.min_word_count}")
    if c.patience is not None and (c.patience < 1 or c.select_on is None):
        raise ConfigError(f"config key 'captioning.patience' must be >= 1 and needs captioning.select_on, got "
                          f"{c.patience} (select_on: {c.select_on})")
    if c.select_on is not None and config.data.val is None:
        raise ConfigError("config key 'captioning.select_on' needs a val split (data.val) to caption and score")
    if config.data.max_question_length < 3:
        raise ConfigError("config key 'data.max_question_length' must be >= 3 for task captioning: a caption "
                          f"holds BOS, a word and EOS, got {config.data.max_question_length}")


def prepare_captioning(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Task captioning: captioned images, every caption of each image in its batch."""
    check_captioning_config(config)
    train_read = read_split(config.data, "train")
    val_read = read_split(config.data, "val") if config.data.val else None
    tokenizer = caption_tokenizer(config, train_read.samples, model_dir, resume)
    CaptionSpecials.of(tokenizer)  # fail now, not after training, on a tokenizer without start / end tokens
    model = build_captioning_model(config, tokenizer.get_vocab_size())
    save_vocabularies(model_dir, config, tokenizer, None)
    # data.feature_cache: the items carry the frozen image encoder's cached features, not images.
    loader = feature_loader(config, model.image_encoder, train_read.samples + (val_read.samples if val_read else []),
                            progress)
    args = (tokenizer, config.data.image_size, config.data.max_question_length)
    train_set = CaptioningDataset(train_read.samples, *args, train_read.skipped, progress, "Loading train images",
                                  image_loader=loader)
    if len(train_set) == 0:
        raise ConfigError("task captioning found no captioned training images"
                          + (f"; {train_read.skipped.summary()}" if train_read.skipped.count else ""))
    val_set = CaptioningDataset(val_read.samples, *args, val_read.skipped, progress, "Loading val images",
                                image_loader=loader) if val_read else None
    warn_skipped(train=train_read, val=val_read)

    val_captions = ValCaptions(val_set, tokenizer, config, loader is not None) \
        if config.captioning.select_on and val_set is not None and len(val_set) else None
    module = CaptioningModule(model, config.captioning, config.train,
                              steps_per_epoch(config, len(train_set)) * config.train.epochs, val_captions)
    summary = {
        "task": "captioning",
        "train": _split_summary(train_set, train_read),
        "val": None if val_set is None else _split_summary(val_set, val_read),
        "vocab": tokenizer.get_vocab_size(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    datamodule = EpochDataModule(train_set, val_set, config, feature_collate(config, collate_captions))

    def save() -> None:  # after training: the exported weights are the selected ones (on_train_end)
        if module.best["weights"]:
            summary["selected"] = {"on": f"val_{config.captioning.select_on}", "score": module.best["score"],
                                   "epoch": module.best["epoch"]}
        save_model_dir(model_dir, model.cpu(), config, tokenizer, None)

    # Without a test split, the finished model is measured on val (a recipe that tunes on val reports it).
    return Prepared(module, datamodule, save, summary)


# --------------------------------------------------------------------------- decoding and evaluation

def caption_images(saved: SavedModel, images: torch.Tensor, beam_size: int | None = None,
                   length_penalty: float | None = None, max_length: int | None = None, batch: int | None = None,
                   progress: bool = False, features: bool = False) -> list[tuple[str, float]]:
    """(caption, summed log-prob) for each of `images` (uint8 [N, 3, S, S], or with `features` the frozen
    image encoder's cached output); settings default to the config's."""
    c = saved.config.captioning
    beam_size = c.beam_size if beam_size is None else beam_size
    length_penalty = c.length_penalty if length_penalty is None else length_penalty
    max_length = generation_length(saved.config) if max_length is None else max_length
    positions = getattr(saved.model.decoder, "max_length", None)
    if positions is not None and max_length > positions:
        raise ConfigError(f"max_length {max_length} is more than the {positions} positions this decoder was "
                          "trained with")
    return decode_captions(saved.model, saved.tokenizer, images, beam_size, length_penalty, max_length,
                           batch or c.eval_batch, progress, features)


def decode_captions(model: CaptioningModel, tokenizer, images: torch.Tensor, beam_size: int, length_penalty: float,
                    max_length: int, batch: int, progress: bool = False, features: bool = False
                    ) -> list[tuple[str, float]]:
    """(caption, summed log-prob) for each of `images` (or cached features), `batch` at a time, in eval mode."""
    specials = CaptionSpecials.of(tokenizer)
    model = model.eval()
    device = next(model.parameters()).device
    out = []
    starts = range(0, len(images), batch)
    for start in track(starts, "Captioning", total=len(starts), enabled=progress):
        chunk = images[start: start + batch].to(device)
        generated = model.generate(None if features else chunk, specials.bos, specials.eos, max_length, beam_size,
                                   length_penalty, specials.blocked, image_features=chunk if features else None)
        out += [(decode_caption(tokenizer, ids), score) for ids, score in zip(generated.ids, generated.log_probs)]
    return out


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
    from ..models.saved import load_model_dir

    check_captioning_config(config)
    read = read_split(config.data, split)
    saved = load_model_dir(model_dir, task="captioning")
    saved.config.captioning = config.captioning
    saved.config.data.feature_cache = config.data.feature_cache
    metrics, records = evaluate_captioning(saved, read.samples, read.skipped, progress)
    metrics = {"task": "captioning", "split": split, **metrics}
    if out_json is not None:
        out_json.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
        out_json.with_name(out_json.stem + "_captions.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return metrics
