"""Task retrieval: image-text contrastive training and two-stage (LAVIS) retrieval evaluation.

Training: each batch pairs B images with one caption each, so the other images are the negatives.
Loss = InfoNCE at a learnable temperature (+ hinge_weight * VSE++ hinge) + itm_weight * the
matching loss on hard negatives drawn from the batch similarities (when model.fusion is set).

Evaluation: embed every image and caption of the split once, rank by cosine similarity (first
stage), then re-rank each query's top k with the matching head, score = ITC + w * ITM (ITC = the
contrastive logit, cosine x learned scale; ITM = the head's log-odds of a match; w =
retrieval.rerank_weight); candidates beyond the top k keep their first-stage order below them.
With data.feature_cache the frozen encoders' outputs (images, and a frozen text encoder's states)
come from the cache, in training and evaluation alike.
Recall@1/5/10 and median / mean rank are reported in both directions for both stages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from ..config import Config, RetrievalConfig, TrainConfig
from ..data.caption_dataset import CaptionDataset, PairSampler, collate_pairs
from ..data.feature_cache import feature_collate, feature_loader, text_feature_states
from ..data.formats.common import SkipLog
from ..data.loading import read_split
from ..data.records import CaptionSample
from ..data.subsample import sample_images
from ..data.tokenizer import build_tokenizer, load_tokenizer, pad_ids
from ..errors import ConfigError, DataError
from ..heads.retrieval import match_score
from ..losses.hinge import vse_hinge_loss
from ..losses.itm import itm_loss, itm_pairs, sample_hard_negatives
from ..metrics.retrieval import retrieval_metrics, retrieval_ranks
from ..models.factory import build_retrieval_model, text_tokenizer_file
from ..models.retrieval import RetrievalModel
from ..models.saved import TOKENIZER, SavedModel, save_model_dir, save_vocabularies
from ..progress import track
from ..types import Features
from .module import configure_adamw
from .run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped

RECALL_AT = (1, 5, 10)


# --------------------------------------------------------------------------- training

def same_text(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, B] bool: rows i and j hold the same caption (never a negative for each other); diagonal False."""
    ids = input_ids.masked_fill(~attention_mask.bool(), -1)
    same = (ids[:, None, :] == ids[None, :, :]).all(-1)
    return same & ~torch.eye(len(ids), dtype=torch.bool, device=ids.device)


class RetrievalModule(L.LightningModule):
    def __init__(self, model: RetrievalModel, task: RetrievalConfig, train_config: TrainConfig, total_steps: int,
                 seed: int = 0):
        super().__init__()
        self.model, self.task, self.cfg, self.total_steps, self.seed = model, task, train_config, total_steps, seed

    def losses(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """{"loss", "itc", ["hinge"], ["itm", "itm_acc"], "acc"} of one batch of row-aligned pairs."""
        model, task = self.model, self.task
        image = model.encode_images(batch.get("images"), batch.get("image_features"))  # features: data.feature_cache
        text = model.encode_texts(batch["input_ids"], batch["attention_mask"], batch.get("text_states"))
        image_emb, text_emb = model.head(image, text)
        out = {"itc": model.head.loss(image_emb, text_emb)}
        loss = out["itc"]
        similarity = image_emb @ text_emb.T
        positives = same_text(batch["input_ids"], batch["attention_mask"])
        batch_size = len(similarity)
        target = torch.arange(batch_size, device=similarity.device)
        out["acc"] = (similarity.argmax(1) == target).float().mean()  # in-batch image -> text top-1
        if task.hinge_weight:
            out["hinge"] = vse_hinge_loss(similarity, task.hinge_margin, task.hinge_max_violation, positives)
            loss = loss + task.hinge_weight * out["hinge"]
        if model.can_rerank and task.itm_weight:
            negatives = ~(positives | torch.eye(batch_size, dtype=torch.bool, device=similarity.device))
            if negatives.any(1).all() and negatives.any(0).all():
                drawn = sample_hard_negatives(similarity * model.head.scale, positives, task.negatives_temperature,
                                              generator)
                image_index, text_index, labels = itm_pairs(*drawn)
            else:  # a batch of one (or of one caption): positives only, so every parameter still trains
                image_index = text_index = target
                labels = torch.ones_like(target)
            logits = model.match(image.index_select(image_index), text.index_select(text_index))
            out["itm"] = itm_loss(logits, labels)
            out["itm_acc"] = (logits.argmax(-1) == labels).float().mean()
            loss = loss + task.itm_weight * out["itm"]
        out["loss"] = loss
        return out

    def _generator(self, step: int) -> torch.Generator:
        # Negatives drawn from (seed, step) alone: a resumed run draws the ones the interrupted run would have.
        return torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + step)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.losses(batch, self._generator(self.global_step))
        n = len(batch["input_ids"])
        for name, value in out.items():
            self.log(f"train_{name}", value, prog_bar=name in ("loss", "acc"), batch_size=n)
        self.log("logit_scale", self.model.head.scale, batch_size=n)
        return out["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.losses(batch, self._generator(batch_idx))
        n = len(batch["input_ids"])
        for name, value in out.items():
            self.log(f"val_{name}", value, prog_bar=name in ("loss", "acc"), batch_size=n, sync_dist=True)

    def configure_optimizers(self):
        return configure_adamw(self.model, self.cfg, self.total_steps)


class WithTextStates(Dataset):
    """A CaptionDataset whose items also carry their caption's cached frozen text states [length, H]."""

    def __init__(self, dataset: CaptionDataset, states: list[torch.Tensor]):
        self.dataset, self.states = dataset, states

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, list[int], torch.Tensor]:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        image, ids = self.dataset[key]
        return image, ids, self.states[self.dataset.caption_for(i, epoch)]


def collate_pairs_with_states(items: list) -> dict:
    """collate_pairs, plus the captions' cached states padded like their ids (text_states [B, L, H])."""
    batch = collate_pairs([item[:2] for item in items])
    batch["text_states"] = pad_sequence([item[2] for item in items], batch_first=True)
    return batch


def _with_text_states(config: Config, model: RetrievalModel, sets: list[CaptionDataset | None], progress: bool):
    """`sets` as they are, or (data.feature_cache over a frozen text encoder) carrying cached text states."""
    present = [d for d in sets if d is not None]
    states = text_feature_states(config, model.text_encoder, [ids for d in present for ids in d.caption_ids],
                                 progress)
    if states is None:
        return sets, collate_pairs
    out, start = [], 0
    for dataset in sets:
        if dataset is not None:
            out.append(WithTextStates(dataset, states[start: start + len(dataset.caption_ids)]))
            start += len(dataset.caption_ids)
        else:
            out.append(None)
    return out, collate_pairs_with_states


def _tokenizer(config: Config, samples: list[CaptionSample], model_dir: Path, resume: bool):
    if resume:  # a resumed run must keep the exact token ids of the interrupted one
        return load_tokenizer(model_dir / TOKENIZER)
    pretrained = text_tokenizer_file(config)
    return load_tokenizer(pretrained) if pretrained else build_tokenizer(c for s in samples for c in s.captions)


def _split_summary(dataset: CaptionDataset, read) -> dict:
    return {"images": len(dataset), "captions": len(dataset.captions), "uncaptioned": dataset.uncaptioned,
            "skipped": read.skipped.as_dict()}


def prepare_retrieval(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Task retrieval: captioned images, one caption per image in each batch."""
    if config.train.batch_images < 2:
        raise ConfigError("config key 'train.batch_images' must be >= 2 for task retrieval: the other images of a "
                          "batch are each pair's negatives")
    train_read = read_split(config.data, "train")
    train_read.samples = sample_images(train_read.samples, config.data.train_fraction, config.seed)
    val_read = read_split(config.data, "val") if config.data.val else None
    tokenizer = _tokenizer(config, train_read.samples, model_dir, resume)
    save_vocabularies(model_dir, config, tokenizer, None)
    model = build_retrieval_model(config, tokenizer.get_vocab_size())
    # data.feature_cache: the items carry the frozen image encoder's cached features, not images.
    loader = feature_loader(config, model.image_encoder, train_read.samples + (val_read.samples if val_read else []),
                            progress)
    args = (tokenizer, config.data.image_size, config.data.max_question_length)
    train_set = CaptionDataset(train_read.samples, *args, train_read.skipped, progress, "Loading train images",
                               image_loader=loader)
    if len(train_set) < 2:
        raise ConfigError(f"task retrieval needs at least 2 captioned training images, found {len(train_set)}"
                          + (f"; {train_read.skipped.summary()}" if train_read.skipped.count else ""))
    val_set = CaptionDataset(val_read.samples, *args, val_read.skipped, progress, "Loading val images",
                             image_loader=loader) if val_read else None
    warn_skipped(train=train_read, val=val_read)
    (train_items, val_items), collate = _with_text_states(config, model, [train_set, val_set], progress)

    module = RetrievalModule(model, config.retrieval, config.train,
                             steps_per_epoch(config, len(train_set)) * config.train.epochs, config.seed)
    summary = {
        "task": "retrieval",
        "train": _split_summary(train_set, train_read),
        "val": None if val_set is None else _split_summary(val_set, val_read),
        "vocab": tokenizer.get_vocab_size(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    datamodule = EpochDataModule(train_items, val_items, config, feature_collate(config, collate), PairSampler)
    return Prepared(module, datamodule, lambda: save_model_dir(model_dir, model.cpu(), config, tokenizer, None),
                    summary)


# --------------------------------------------------------------------------- evaluation

@dataclass
class Embedded:
    """A split encoded once: unit embeddings, and (for re-ranking) the encoders' Features on the CPU."""

    images: torch.Tensor  # [I, E]
    texts: torch.Tensor  # [T, E]
    image_features: Features | None
    text_features: Features | None  # padded to the longest caption; the padding changes no fusion


def _concat(parts: list[Features], length: int | None = None) -> Features:
    """Batches of Features as one, token axes padded to `length` (text batches differ in length)."""
    def pad(x: torch.Tensor, value) -> torch.Tensor:
        if length is None or x.shape[1] == length:
            return x
        shape = (x.shape[0], length - x.shape[1], *x.shape[2:])
        return torch.cat([x, x.new_full(shape, value)], 1)

    boxes = None if parts[0].boxes is None else torch.cat([pad(f.boxes, 0) for f in parts])
    return Features(torch.cat([pad(f.tokens, 0) for f in parts]), torch.cat([pad(f.mask, False) for f in parts]),
                    torch.cat([f.pooled for f in parts]), boxes)


def _to(f: Features, device: torch.device | str) -> Features:
    return Features(f.tokens.to(device), f.mask.to(device), f.pooled.to(device),
                    None if f.boxes is None else f.boxes.to(device))


@torch.no_grad()
def embed_dataset(model: RetrievalModel, dataset: CaptionDataset, batch: int = 64, progress: bool = True,
                  keep_features: bool | None = None, cached_images: bool = False,
                  text_states: list[torch.Tensor] | None = None) -> Embedded:
    """Every image and every caption of `dataset` through the encoders and the embedding head.

    cached_images: dataset.images hold the frozen image encoder's cached output; text_states: the
    frozen text encoder's cached states of each caption (data.feature_cache)."""
    model.eval()
    keep = model.can_rerank if keep_features is None else keep_features
    device = next(model.parameters()).device
    image_emb, text_emb, image_feats, text_feats = [], [], [], []
    starts = range(0, len(dataset), batch)
    for start in track(starts, "Embedding images", total=len(starts), enabled=progress):
        images = dataset.images[start: start + batch].to(device)
        features = model.encode_images(None, images) if cached_images else model.encode_images(images)
        image_emb.append(model.head.embed_image(features).float().cpu())
        if keep:
            image_feats.append(_to(features, "cpu"))
    starts = range(0, len(dataset.caption_ids), batch)
    for start in track(starts, "Embedding captions", total=len(starts), enabled=progress):
        ids, mask = pad_ids(dataset.caption_ids[start: start + batch])
        states = None if text_states is None else pad_sequence(text_states[start: start + batch], batch_first=True)
        features = model.encode_texts(ids.to(device), mask.to(device), None if states is None else states.to(device))
        text_emb.append(model.head.embed_text(features).float().cpu())
        if keep:
            text_feats.append(_to(features, "cpu"))
    longest = max(f.tokens.shape[1] for f in text_feats) if keep else None
    return Embedded(torch.cat(image_emb), torch.cat(text_emb), _concat(image_feats) if keep else None,
                    _concat(text_feats, longest) if keep else None)


def _lift(similarity: torch.Tensor, top: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Rows are queries: `top` [Q, k] candidates get `scores`; every other item keeps its similarity,
    shifted below the row's lowest candidate score (the first-stage order holds beyond the top k)."""
    candidate = torch.zeros_like(similarity, dtype=torch.bool).scatter_(1, top, True)
    rest_max = similarity.masked_fill(candidate, float("-inf")).amax(1)
    shift = scores.amin(1) - rest_max - 1
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))  # no other item in the row
    return (similarity + shift[:, None]).scatter(1, top, scores)


def rerank_top_k(similarity: torch.Tensor, k: int, score_pairs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-stage scores from first-stage `similarity` [I, T]: (image->text [I, T], text->image [I, T]).

    Each image's top-k texts and each text's top-k images (k capped at the candidates there are)
    are re-scored as similarity + weight * score_pairs(image_index, text_index); a pair that is a candidate
    in both directions is scored once. Rank image->text queries along rows of the first matrix,
    text->image queries down columns of the second.
    """
    num_images, num_texts = similarity.shape
    k_texts, k_images = min(k, num_texts), min(k, num_images)
    top_texts = similarity.topk(k_texts, dim=1).indices  # [I, k]
    top_images = similarity.T.topk(k_images, dim=1).indices  # [T, k]
    pair_images = torch.cat([torch.arange(num_images).repeat_interleave(k_texts), top_images.flatten()])
    pair_texts = torch.cat([top_texts.flatten(), torch.arange(num_texts).repeat_interleave(k_images)])
    pairs, where = torch.unique(pair_images * num_texts + pair_texts, return_inverse=True)
    matched = weight * score_pairs(pairs // num_texts, pairs % num_texts).float()[where]
    i2t_itm, t2i_itm = matched[: num_images * k_texts], matched[num_images * k_texts:]
    i2t = _lift(similarity, top_texts, similarity.gather(1, top_texts) + i2t_itm.view(num_images, k_texts))
    t2i = _lift(similarity.T, top_images, similarity.T.gather(1, top_images) + t2i_itm.view(num_texts, k_images))
    return i2t, t2i.T


def itm_scorer(model: RetrievalModel, embedded: Embedded, batch: int = 256
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """score_pairs for `rerank_top_k`: the matching head's log-odds of (image i, text t), in batches."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def score(image_index: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        model.eval()
        out = []
        for start in range(0, len(image_index), batch):
            image = embedded.image_features.index_select(image_index[start: start + batch])
            text = embedded.text_features.index_select(text_index[start: start + batch])
            length = int(text.mask.sum(1).max())  # drop the columns that are padding in every row of the chunk
            text = Features(text.tokens[:, :length], text.mask[:, :length], text.pooled)
            out.append(match_score(model.match(_to(image, device), _to(text, device))).float().cpu())
        return torch.cat(out) if out else torch.empty(0)

    return score


def _memo(score_pairs: Callable) -> Callable:
    """score_pairs computed once: every re-ranking of the same first stage asks for the same pairs."""
    memory: dict[str, torch.Tensor] = {}

    def score(image_index: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        if "scores" not in memory:
            memory["scores"] = score_pairs(image_index, text_index)
        return memory["scores"]

    return score


RERANK_SWEEP = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)  # retrieval.rerank_weight values eval.json compares


def _directions(i2t_scores: torch.Tensor, t2i_scores: torch.Tensor, owner: torch.Tensor, ks) -> dict:
    """Metrics with image->text read from one score matrix and text->image from another."""
    i2t = retrieval_metrics(i2t_scores, owner, ks)
    t2i = retrieval_metrics(t2i_scores, owner, ks)
    out = {**{k: v for k, v in i2t.items() if k.startswith("i2t_")}, **{k: v for k, v in t2i.items()
                                                                          if k.startswith("t2i_")}}
    recalls = [out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks]
    out["r_mean"] = sum(recalls) / len(recalls)
    return out


def evaluate_retrieval(saved: SavedModel, samples: list[CaptionSample], skip_log: SkipLog, rerank_k: int = 16,
                       batch: int = 64, progress: bool = True, cache_config: Config | None = None,
                       rerank_weight: float = 1.0) -> tuple[dict, list[dict]]:
    """(metrics, one record per caption) of text <-> image retrieval over `samples`.

    cache_config: a config whose data.feature_cache serves the frozen encoders' outputs (the same
    numbers, without running the frozen parts again)."""
    cfg, model = saved.config.data, saved.model
    cached = cache_config is not None and bool(cache_config.data.feature_cache)
    loader = feature_loader(cache_config, model.image_encoder, samples, progress) if cached else None
    dataset = CaptionDataset(samples, saved.tokenizer, cfg.image_size, cfg.max_question_length, skip_log,
                             progress=progress, image_loader=loader)
    text_states = text_feature_states(cache_config, model.text_encoder, dataset.caption_ids, progress) \
        if cached else None
    if len(dataset) == 0:
        raise DataError("no captioned images to evaluate retrieval on"
                        + (f" ({skip_log.summary()})" if skip_log.count else ""))
    ks = tuple(k for k in RECALL_AT if k <= len(dataset))  # R@K needs K candidate images
    rerank = rerank_k > 0 and model.can_rerank
    clock = time.perf_counter()
    embedded = embed_dataset(model, dataset, batch, progress, keep_features=rerank, cached_images=cached,
                             text_states=text_states)
    similarity = embedded.images @ embedded.texts.T
    embed_seconds = time.perf_counter() - clock
    owner = dataset.text_to_image
    first = retrieval_metrics(similarity, owner, ks)
    i2t_scores = t2i_scores = similarity
    reranked = sweep = None
    if rerank:
        clock = time.perf_counter()
        # ITC as the contrastive logits (cosine x the learned scale), so ITC and ITM are both log-odds.
        logits, score = similarity * float(model.head.scale), _memo(itm_scorer(model, embedded))
        i2t_scores, t2i_scores = rerank_top_k(logits, rerank_k, score, rerank_weight)
        reranked = _directions(i2t_scores, t2i_scores, owner, ks)
        sweep = {str(w): {k: v for k, v in _directions(*rerank_top_k(logits, rerank_k, score, w), owner, ks).items()
                          if k in ("i2t_r1", "t2i_r1", "r_mean")} for w in RERANK_SWEEP}
    rerank_seconds = time.perf_counter() - clock if rerank else 0.0
    metrics = {
        "task": "retrieval", "images": len(dataset), "captions": len(dataset.captions), "ks": list(ks),
        "rerank_k": rerank_k if rerank else 0, "rerank_weight": rerank_weight if rerank else None,
        "first_stage": first, "reranked": reranked, "rerank_sweep": sweep,
        "logit_scale": float(model.head.scale), "seconds": {"embed": embed_seconds, "rerank": rerank_seconds},
        "uncaptioned": dataset.uncaptioned, "skipped": skip_log.as_dict(),
    }
    _, first_ranks = retrieval_ranks(similarity, owner)
    _, final_ranks = retrieval_ranks(t2i_scores, owner)
    top = t2i_scores.topk(min(5, len(dataset)), dim=0).indices.T  # [T, 5]: each caption's best images
    paths = [str(p) for p in dataset.image_paths]
    records = [{"caption": caption, "image": paths[image], "image_id": dataset.samples[image].image_id,
                "rank_first_stage": int(r1), **({"rank_reranked": int(r2)} if rerank else {}),
                "top_images": [paths[i] for i in row]}
               for caption, image, r1, r2, row in zip(dataset.captions, owner.tolist(), first_ranks.tolist(),
                                                        final_ranks.tolist(), top.tolist())]
    return metrics, records


def evaluate_retrieval_split(model_dir: Path, config: Config, split: str, out_json: Path | None,
                             progress: bool = True) -> dict:
    """Evaluate the retrieval model in `model_dir` on one split of `config.data`; write metrics (+ rankings)."""
    from ..models.saved import load_model_dir

    read = read_split(config.data, split)
    saved = load_model_dir(model_dir, task="retrieval")
    metrics, records = evaluate_retrieval(saved, read.samples, read.skipped, config.retrieval.rerank_k,
                                          config.retrieval.eval_batch, progress, config, config.retrieval.rerank_weight)
    metrics = {"split": split, **metrics}
    if out_json is not None:
        out_json.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
        out_json.with_name(out_json.stem + "_rankings.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return metrics
