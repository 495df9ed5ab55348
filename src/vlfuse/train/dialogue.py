"""Task dialogue: visual dialogue (VisDial, Das et al. 2017), discriminative or generative.

Training: discriminative, every round of a batch of dialogues scores its candidate answers and the
loss is the cross-entropy of the ground-truth candidate; generative, the decoder learns to write
the ground-truth answer (token cross-entropy, teacher forcing). Rounds without a ground truth (as in
VisDial's test split) are left out. Evaluation (both decoders: generative scores are
log-likelihoods) ranks each round's candidates by score and reports MRR, R@1/5/10 and mean
rank (`vlfuse.metrics.ranking`), overall and per question family where the data names one (the
built-in dialogues do: `family` on each round).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from ..config import Config, TrainConfig
from ..data.answers import AnswerVocab
from ..data.caption_tokens import build_caption_tokenizer
from ..data.dialog_dataset import DialogDataset, collate_dialogs, dialogue_texts
from ..data.formats.common import SkipLog
from ..data.loading import read_split
from ..data.records import DialogSample
from ..data.tokenizer import build_tokenizer, load_tokenizer
from ..data.vqa_dataset import IGNORE_INDEX
from ..errors import ConfigError, DataError
from ..metrics.ranking import answer_ranks, ranking_metrics
from ..models.dialogue import DialogueModel, build_dialogue_model
from ..models.factory import text_tokenizer_file
from ..models.saved import ANSWERS, TOKENIZER, SavedModel, save_model_dir, save_vocabularies
from ..progress import track
from .module import configure_adamw
from .run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped

MODEL_INPUTS = ("images", "question_ids", "question_mask", "history_ids", "history_mask", "image_index",
                "answer_ids", "answer_mask", "options")


def score_batch(model: DialogueModel, batch: dict) -> torch.Tensor:
    return model(*(batch[k] for k in MODEL_INPUTS))


class DialogueModule(L.LightningModule):
    def __init__(self, model: DialogueModel, train_config: TrainConfig, total_steps: int):
        super().__init__()
        self.model, self.cfg, self.total_steps = model, train_config, max(1, total_steps)

    def _step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        labels = batch["labels"]
        if self.model.generative:  # teach the decoder to write each labelled round's answer
            model, rows = self.model, (labels != IGNORE_INDEX).nonzero().squeeze(1)
            context = model.context(model.encode_images(batch["images"]), *(batch[k] for k in MODEL_INPUTS[1:6]))
            answers = batch["options"][rows, labels[rows]]
            loss = model.answer_loss(context, batch["answer_ids"][answers], batch["answer_mask"][answers], rows)
            return loss, None, len(rows)
        scores = score_batch(self.model, batch)
        loss = F.cross_entropy(scores, labels, ignore_index=IGNORE_INDEX)
        labelled = labels != IGNORE_INDEX
        top1 = ((scores.argmax(-1) == labels) & labelled).sum() / labelled.sum().clamp_min(1)
        return loss, top1, int(labelled.sum())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, top1, n = self._step(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        if top1 is not None:
            self.log("train_r1", top1, prog_bar=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, top1, n = self._step(batch)
        self.log("val_loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        if top1 is not None:
            self.log("val_r1", top1, prog_bar=True, batch_size=n, sync_dist=True)

    def configure_optimizers(self):
        return configure_adamw(self.model, self.cfg, self.total_steps)


def make_dataset(samples: list[DialogSample], tokenizer, config: Config, skip_log: SkipLog, progress: bool,
                 description: str) -> DialogDataset:
    d = config.dialogue
    return DialogDataset(samples, tokenizer, config.data.image_size, config.data.max_question_length,
                         d.max_history_length, d.max_answer_length, skip_log, progress, description)


def _vocabularies(config: Config, samples: list[DialogSample], model_dir: Path, resume: bool):
    """(tokenizer, the training answers): what predict ranks when given no candidates."""
    if resume:  # a resumed run keeps the interrupted one's token ids
        return load_tokenizer(model_dir / TOKENIZER), AnswerVocab.load(model_dir / ANSWERS)
    pretrained = text_tokenizer_file(config)
    if pretrained:
        tokenizer = load_tokenizer(pretrained)
    elif config.dialogue.decoder == "generative":  # answers are written between [BOS] and [EOS]
        tokenizer = build_caption_tokenizer(dialogue_texts(samples))
    else:
        tokenizer = build_tokenizer(dialogue_texts(samples))
    answers = list(dict.fromkeys(r.answer for s in samples for r in s.rounds if r.answer is not None))
    if not answers:
        raise ConfigError("task dialogue: the training dialogues have no answers to learn from")
    return tokenizer, AnswerVocab(answers)


def _split_summary(dataset: DialogDataset, read) -> dict:
    return {"dialogs": len(dataset), "rounds": dataset.num_rounds, "answers": len(dataset.answers),
            "skipped": read.skipped.as_dict()}


def prepare_dialogue(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Task dialogue: dialogues grouped by image, every round scoring its candidates."""
    train_read = read_split(config.data, "train")
    val_read = read_split(config.data, "val") if config.data.val else None
    tokenizer, answers = _vocabularies(config, train_read.samples, model_dir, resume)
    save_vocabularies(model_dir, config, tokenizer, answers)
    train_set = make_dataset(train_read.samples, tokenizer, config, train_read.skipped, progress,
                             "Loading train images")
    if len(train_set) == 0:
        raise ConfigError("no usable training dialogues: " + train_read.skipped.summary())
    val_set = (make_dataset(val_read.samples, tokenizer, config, val_read.skipped, progress, "Loading val images")
               if val_read else None)
    warn_skipped(train=train_read, val=val_read)

    model = build_dialogue_model(config, tokenizer.get_vocab_size())
    module = DialogueModule(model, config.train, steps_per_epoch(config, len(train_set)) * config.train.epochs)
    summary = {
        "task": "dialogue",
        "train": _split_summary(train_set, train_read),
        "val": None if val_set is None else _split_summary(val_set, val_read),
        "vocab": tokenizer.get_vocab_size(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    datamodule = EpochDataModule(train_set, val_set, config, collate_dialogs)
    return Prepared(module, datamodule, lambda: save_model_dir(model_dir, model.cpu(), config, tokenizer, answers),
                    summary)


# --------------------------------------------------------------------------- evaluation

@torch.no_grad()
def score_dataset(model: DialogueModel, dataset: DialogDataset, batch: int = 16, progress: bool = True
                  ) -> list[tuple[DialogSample, int, torch.Tensor]]:
    """(dialogue, round, scores [C]) for every round of `dataset`, in order."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    starts = range(0, len(dataset), batch)
    for start in track(starts, "Scoring dialogues", total=len(starts), enabled=progress):
        items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        data = collate_dialogs(items, with_samples=True)
        scores = score_batch(model, {k: data[k].to(device) for k in MODEL_INPUTS}).float().cpu()
        for (sample, t), row in zip(data["rounds"], scores):
            out.append((sample, t, row[: len(sample.rounds[t].options)]))
    return out


def _ranking(rows: list[tuple[torch.Tensor, int]]) -> dict:
    """ranking_metrics over rounds that may differ in candidate count (K capped at the fewest)."""
    by_width = defaultdict(list)
    for scores, gt in rows:
        by_width[len(scores)].append((scores, gt))
    ks = tuple(k for k in (1, 5, 10) if k <= min(by_width))
    ranks = torch.cat([answer_ranks(torch.stack([s for s, _ in group]), torch.tensor([g for _, g in group]))
                       for group in by_width.values()]).double()
    out = {"rounds": len(ranks), "mrr": (1.0 / ranks).mean().item()}
    out.update({f"r{k}": (ranks <= k).double().mean().item() for k in ks})
    out["mean_rank"] = ranks.mean().item()
    return out


def evaluate_dialogue(saved: SavedModel, samples: list[DialogSample], skip_log: SkipLog, batch: int = 16,
                      progress: bool = True) -> tuple[dict, list[dict]]:
    """(metrics, one record per round) of candidate ranking over `samples`."""
    dataset = make_dataset(samples, saved.tokenizer, saved.config, skip_log, progress, "Loading images")
    scored = score_dataset(saved.model, dataset, batch, progress)
    labelled = [(scores, sample.rounds[t].gt_index, sample, t) for sample, t, scores in scored
                if sample.rounds[t].gt_index is not None]
    if not labelled:
        raise DataError("no dialogue rounds with a ground-truth answer to evaluate"
                        + (f" ({skip_log.summary()})" if skip_log.count else ""))
    widths = {len(s) for s, *_ in labelled}
    if len(widths) == 1:  # the usual case (VisDial: 100 each): the library function, as is
        width = widths.pop()
        ks = tuple(k for k in (1, 5, 10) if k <= width)
        metrics = ranking_metrics(torch.stack([s for s, *_ in labelled]), torch.tensor([g for _, g, *_ in labelled]),
                                  ks)
        metrics = {"rounds": len(labelled), **metrics}
    else:
        metrics = _ranking([(s, g) for s, g, *_ in labelled])
    families = defaultdict(list)
    for scores, gt, sample, t in labelled:
        family = sample.rounds[t].extra.get("family")
        if isinstance(family, str):
            families[family].append((scores, gt))
    result = {"task": "dialogue", "dialogs": len(dataset), "candidates": sorted({len(s) for *_, s in scored}),
              **metrics, "unlabelled_rounds": len(scored) - len(labelled),
              "families": {f: _ranking(rows) for f, rows in sorted(families.items())},
              "skipped": skip_log.as_dict()}
    records = []
    for sample, t, scores in scored:
        r = sample.rounds[t]
        top = scores.topk(min(5, len(scores))).indices.tolist()
        record = {"image_id": sample.image_id, "round": t, "question": r.question, "answer": r.answer,
                  "top": [r.options[i] for i in top]}
        if r.gt_index is not None:
            record["rank"] = int((scores >= scores[r.gt_index]).sum())
        records.append(record)
    return result, records


def evaluate_dialogue_split(model_dir: Path, config: Config, split: str, out_json: Path | None,
                            progress: bool = True) -> dict:
    """Evaluate the dialogue model in `model_dir` on one split of `config.data`; write metrics (+ rankings)."""
    from ..models.saved import load_model_dir

    read = read_split(config.data, split)
    saved = load_model_dir(model_dir, task="dialogue")
    metrics, records = evaluate_dialogue(saved, read.samples, read.skipped, config.dialogue.eval_batch, progress)
    if out_json is not None:
        out_json.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
        out_json.with_name(out_json.stem + "_rankings.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return metrics
