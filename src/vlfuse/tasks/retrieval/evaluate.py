"""Task retrieval's evaluation: embedding similarity ranks every caption and image (first stage), the
matching head re-ranks each query's top k (LAVIS); Recall@K both ways, for both stages."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from ...config import Config
from ...data.caption_dataset import CaptionDataset
from ...data.feature_cache import feature_loader, text_feature_states
from ...data.formats.common import SkipLog
from ...data.loading import read_split
from ...data.records import CaptionSample
from ...data.tokenizer import pad_ids
from ...errors import DataError
from ...metrics.retrieval import retrieval_metrics, retrieval_ranks
from ...models.retrieval import RetrievalModel
from ...models.saved import SavedModel, load_model_dir
from ...progress import track
from ...types import Features
from ..base import write_eval_json
from .querybank import load_querybank, normalised_scores

RECALL_AT = (1, 5, 10)


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
                  text_states: list[torch.Tensor] | None = None, mirrored_images: torch.Tensor | None = None
                  ) -> Embedded:
    """Every image and every caption of `dataset` through the encoders and the embedding head.

    cached_images: dataset.images hold the frozen image encoder's cached output (and mirrored_images,
    row-aligned, that of the photos flipped, for the model's flip_average); text_states: the frozen text
    encoder's cached states of each caption (data.feature_cache)."""
    model.eval()
    keep = model.can_rerank if keep_features is None else keep_features
    device = next(model.parameters()).device
    image_emb, text_emb, image_feats, text_feats = [], [], [], []
    starts = range(0, len(dataset), batch)
    for start in track(starts, "Embedding images", total=len(starts), enabled=progress):
        images = dataset.images[start: start + batch].to(device)
        mirrored = None if mirrored_images is None else mirrored_images[start: start + batch].to(device)
        features = model.encode_images(None, images) if cached_images else model.encode_images(images)
        image_emb.append((model.embed_images(None, images, mirrored, encoded=features) if cached_images
                          else model.embed_images(images, encoded=features)).float().cpu())
        if keep:  # the re-ranker reads the photos as they are
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


def mirrored_features(config: Config, model: RetrievalModel, dataset: CaptionDataset, progress: bool = True
                      ) -> torch.Tensor | None:
    """The cached features of `dataset`'s photos flipped left-right, row-aligned with dataset.images, when the
    model averages each photo with its mirror (retrieval.flip_average) and they come from the cache."""
    if not (model.flip_average and config.data.feature_cache and len(dataset)):
        return None
    loader = feature_loader(config, model.image_encoder, dataset.samples, progress, mirrored=True)
    return torch.stack([loader(path) for path in dataset.image_paths])


def _lift(similarity: torch.Tensor, top: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Rows are queries: `top` [Q, k] candidates get `scores`; every other item keeps its similarity,
    shifted below the row's lowest candidate score (the first-stage order holds beyond the top k)."""
    candidate = torch.zeros_like(similarity, dtype=torch.bool).scatter_(1, top, True)
    rest_max = similarity.masked_fill(candidate, float("-inf")).amax(1)
    shift = scores.amin(1) - rest_max - 1
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))  # no other item in the row
    return (similarity + shift[:, None]).scatter(1, top, scores)


def rerank_top_k(similarity: torch.Tensor, k: int, score_pairs: Callable, weight: float = 1.0,
                 t2i_similarity: torch.Tensor | None = None, t2i_weight: float | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-stage scores from first-stage `similarity` [I, T]: (image->text [I, T], text->image [I, T]).

    Each image's top-k texts and each text's top-k images (k capped at the candidates there are)
    are re-scored as similarity + weight * score_pairs(image_index, text_index); a pair that is a candidate
    in both directions is scored once. score_pairs returns one score per pair, or two, (as an image
    query's candidate, as a text query's), when the score depends on which side asks. Rank image->text
    queries along rows of the first matrix, text->image queries down columns of the second.
    `t2i_similarity`: the text->image first stage when it differs from the image->text one (query-bank
    normalisation discounts each direction's gallery differently); `t2i_weight`: text queries' weight
    (None: `weight`).
    """
    t2i_similarity = similarity if t2i_similarity is None else t2i_similarity
    num_images, num_texts = similarity.shape
    k_texts, k_images = min(k, num_texts), min(k, num_images)
    top_texts = similarity.topk(k_texts, dim=1).indices  # [I, k]
    top_images = t2i_similarity.T.topk(k_images, dim=1).indices  # [T, k]
    pair_images = torch.cat([torch.arange(num_images).repeat_interleave(k_texts), top_images.flatten()])
    pair_texts = torch.cat([top_texts.flatten(), torch.arange(num_texts).repeat_interleave(k_images)])
    pairs, where = torch.unique(pair_images * num_texts + pair_texts, return_inverse=True)
    scores = score_pairs(pairs // num_texts, pairs % num_texts)
    image_query, text_query = scores if isinstance(scores, tuple) else (scores, scores)
    i2t_added = weight * image_query.float()[where[: num_images * k_texts]]
    t2i_added = (weight if t2i_weight is None else t2i_weight) * text_query.float()[where[num_images * k_texts:]]
    i2t = _lift(similarity, top_texts, similarity.gather(1, top_texts) + i2t_added.view(num_images, k_texts))
    t2i = _lift(t2i_similarity.T, top_images,
                t2i_similarity.T.gather(1, top_images) + t2i_added.view(num_texts, k_images))
    return i2t, t2i.T


def rerank_scorer(model: RetrievalModel, embedded: Embedded, batch: int = 256) -> Callable:
    """score_pairs for `rerank_top_k`: the model's re-ranking scores of (image i, text t), as an image query's
    candidate and as a text query's (RetrievalModel.rerank_scores), in batches."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def score(image_index: torch.Tensor, text_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        out = []
        for start in range(0, len(image_index), batch):
            image = embedded.image_features.index_select(image_index[start: start + batch])
            text = embedded.text_features.index_select(text_index[start: start + batch])
            length = int(text.mask.sum(1).max())  # drop the columns that are padding in every row of the chunk
            text = Features(text.tokens[:, :length], text.mask[:, :length], text.pooled)
            out.append(torch.stack(model.rerank_scores(_to(image, device), _to(text, device))).float().cpu())
        image_query, text_query = torch.cat(out, 1) if out else torch.empty(2, 0)
        return image_query, text_query

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
QUERYBANK_SWEEP = (5.0, 8.0, 10.0, 12.0, 15.0, 20.0)  # retrieval.querybank_beta values eval.json compares


def _r1(metrics: dict) -> dict:
    """What a sweep keeps of each setting: R@1 both ways and their mean over every recall."""
    return {k: v for k, v in metrics.items() if k in ("i2t_r1", "t2i_r1", "r_mean")}


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
                       rerank_weight: float = 1.0, querybank: dict[str, torch.Tensor] | None = None,
                       querybank_beta: float = 10.0, t2i_rerank_weight: float | None = None
                       ) -> tuple[dict, list[dict]]:
    """(metrics, one record per caption) of text <-> image retrieval over `samples`, re-ranked by the model's
    reranker (retrieval.reranker; text queries at t2i_rerank_weight, None: rerank_weight).

    cache_config: a config whose data.feature_cache serves the frozen encoders' outputs (the same
    numbers, without running the frozen parts again). querybank: the model's bank of training
    embeddings (querybank.py); with it the first stage is bank-normalised before re-ranking."""
    cfg, model = saved.config.data, saved.model
    cached = cache_config is not None and bool(cache_config.data.feature_cache)
    loader = feature_loader(cache_config, model.image_encoder, samples, progress) if cached else None
    dataset = CaptionDataset(samples, saved.tokenizer, cfg.image_size, cfg.max_question_length, skip_log,
                             progress=progress, image_loader=loader)
    mirrored = mirrored_features(cache_config, model, dataset, progress) if cached else None
    text_states = text_feature_states(cache_config, model.text_encoder, dataset.caption_ids, progress) \
        if cached else None
    if len(dataset) == 0:
        raise DataError("no captioned images to evaluate retrieval on"
                        + (f" ({skip_log.summary()})" if skip_log.count else ""))
    ks = tuple(k for k in RECALL_AT if k <= len(dataset))  # R@K needs K candidate images
    rerank = rerank_k > 0 and model.can_rerank
    clock = time.perf_counter()
    embedded = embed_dataset(model, dataset, batch, progress, keep_features=rerank, cached_images=cached,
                             text_states=text_states, mirrored_images=mirrored)
    similarity = embedded.images @ embedded.texts.T
    embed_seconds = time.perf_counter() - clock
    owner = dataset.text_to_image
    first = retrieval_metrics(similarity, owner, ks)
    # ITC as the contrastive logits (cosine x the learned scale), so ITC and ITM are both log-odds.
    i2t_scores = t2i_scores = similarity * float(model.head.scale)
    normalised = bank_sweep = reranked = sweep = None
    if querybank is not None:
        i2t_scores, t2i_scores = normalised_scores(embedded.images, embedded.texts, querybank, querybank_beta)
        normalised = _directions(i2t_scores, t2i_scores, owner, ks)
        bank_sweep = {str(b): _r1(_directions(*normalised_scores(embedded.images, embedded.texts, querybank, b),
                                              owner, ks)) for b in QUERYBANK_SWEEP}
    t2i_weight = rerank_weight if t2i_rerank_weight is None else t2i_rerank_weight
    if rerank:
        clock = time.perf_counter()
        first_i2t, first_t2i, score = i2t_scores, t2i_scores, _memo(rerank_scorer(model, embedded))
        i2t_scores, t2i_scores = rerank_top_k(first_i2t, rerank_k, score, rerank_weight, first_t2i, t2i_weight)
        reranked = _directions(i2t_scores, t2i_scores, owner, ks)
        sweep = {str(w): _r1(_directions(*rerank_top_k(first_i2t, rerank_k, score, w, first_t2i), owner, ks))
                 for w in RERANK_SWEEP}
    rerank_seconds = time.perf_counter() - clock if rerank else 0.0
    metrics = {
        "task": "retrieval", "images": len(dataset), "captions": len(dataset.captions), "ks": list(ks),
        "rerank_k": rerank_k if rerank else 0, "reranker": model.reranker if rerank else None,
        "rerank_weight": rerank_weight if rerank else None,
        "t2i_rerank_weight": t2i_weight if rerank else None,
        "first_stage": first,
        "querybank": None if normalised is None else {"images": len(querybank["images"]),
                                                      "captions": len(querybank["texts"]), "beta": querybank_beta,
                                                      **normalised},
        "querybank_sweep": bank_sweep, "reranked": reranked, "rerank_sweep": sweep,
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
    read = read_split(config.data, split)
    saved = load_model_dir(model_dir, task="retrieval")
    r = config.retrieval
    # --set retrieval.flip_average=... or retrieval.reranker=... measures any model either way
    saved.model.flip_average, saved.model.reranker = r.flip_average, r.reranker
    bank = load_querybank(model_dir) if r.querybank else None
    if r.querybank and bank is None:
        print(f"note: {model_dir} has no query bank (trained with retrieval.querybank: 0): ranking without one",
              file=sys.stderr)
    metrics, records = evaluate_retrieval(saved, read.samples, read.skipped, r.rerank_k, r.eval_batch, progress, config,
                                          r.rerank_weight, bank, r.querybank_beta, r.t2i_rerank_weight)
    return write_eval_json(out_json, {"split": split, **metrics}, records, "rankings")
