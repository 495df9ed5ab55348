"""Validated run configuration: YAML in, typed dataclasses out, a clear error naming any bad key.

Model components stay plain dicts (`{"name": ..., **kwargs}`) here; the factory checks them against
the constructor of the class their name selects, so the schema never goes stale.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError


@dataclass
class SplitConfig:
    """Where one split lives. VQA v2: questions + annotations + images; JSONL/CSV: path (+ images);
    COCO captions: annotations (captions_*.json) + images."""

    questions: str | None = None
    annotations: str | None = None
    images: str | None = None
    path: str | None = None


@dataclass
class DataConfig:
    # Question formats serve tasks vqa, matching and classification; caption formats (coco_captions,
    # karpathy) serve retrieval, captioning, matching and pretrain; visdial serves dialogue.
    format: Literal["vqa_v2", "jsonl", "gqa", "vgqa", "nlvr", "nlvr2", "snli_ve", "coco_captions",
                    "visdial", "webdataset", "karpathy", "v7w"] = "vqa_v2"
    root: str = "."  # relative split paths are resolved against this folder
    train: SplitConfig = field(default_factory=SplitConfig)
    val: SplitConfig | None = None
    test: SplitConfig | None = None
    image_size: int = 64
    max_question_length: int = 32  # tokens of a question (task retrieval: of a caption)
    max_answers: int = 3000  # the most frequent training answers become the classes
    on_bad_sample: Literal["error", "skip"] = "skip"
    # A folder for a frozen image encoder's features (vlfuse.data.feature_cache): computed once per
    # image, reused by every epoch and run; only with model.image_encoder {name: efficientnet, freeze: true}.
    feature_cache: str | None = None
    # With data.feature_cache (tasks retrieval, vqa, matching, classification): cache a frozen pretrained
    # text encoder's states too (per caption or question, below model.text_encoder.tune_layers), so
    # neither frozen encoder runs in training or evaluation.
    cache_text: bool = True
    # Share of the training images kept (with all their questions), drawn by the run's seed: e.g. 0.1
    # trains on 10% of the labels. 1.0 keeps every image.
    train_fraction: float = 1.0
    # Answers held out (few-shot transfer, vlfuse fewshot): questions (or classification records) whose
    # answer is one of these are dropped from every split, so the model never sees them; `vlfuse fewshot`
    # reads them back.
    # Quote yes/no and numbers: YAML reads a bare yes as true and 2 as an integer.
    exclude_answers: list[str] = field(default_factory=list)
    # Scene graphs for graph fusion (vlfuse.data.scene_graph): null = none; auto = the format's own
    # (nlvr: structured_rep; vqa_v2: the built-in scenes/{split}_scenes.json); else a scenes JSON or
    # COCO instances JSON per split under data.root, "{split}" replaced by the split's name.
    scene_graphs: str | None = None
    # A knowledge graph for graph fusion (vlfuse.data.knowledge_graph): .jsonl or .csv triples (head,
    # relation, tail) under data.root, joined to each image's scene graph (needs data.scene_graphs); or
    # per_sample: each row of a JSONL/CSV table names its own graph in its knowledge_graph field.
    knowledge_graph: str | None = None
    # Per image, the knowledge-graph entities named in its scene graph and those this many triples away.
    knowledge_hops: int = 1
    # Each joined triple also a node named by its words and said of the objects its head stands for
    # ("red circle has weight heavy"): a question word reaches the fact in one hop, not along an edge.
    knowledge_facts: bool = False
    # Format webdataset, task vqa: stream the training images from the shards through DataLoader
    # workers instead of decoding them all into memory first (vlfuse.data.vqa_stream); the
    # shuffle buffer holds that many images. Validation images are still loaded whole.
    stream: bool = False
    shuffle_buffer: int = 1000
    # Tasks retrieval and captioning: the share of epochs in which a training photo comes flipped
    # left-right (an augmentation; never with a caption that says left or right). With
    # data.feature_cache the flipped photos' features are cached too: one more pass of the frozen
    # backbone over the training photos. 0: off.
    hflip: float = 0.0


@dataclass
class ModelConfig:
    dim: int = 128
    image_encoder: dict = field(default_factory=lambda: {"name": "cnn"})
    text_encoder: dict = field(default_factory=lambda: {"name": "transformer"})
    # Task retrieval: null trains a dual encoder alone (no matching head; retrieval.reranker: tokens re-ranks).
    fusion: dict | None = field(default_factory=lambda: {"name": "cross_attention"})
    # Task vqa: classifier. Task retrieval: dual_encoder (embedding projections + temperature).
    head: dict = field(default_factory=lambda: {"name": "classifier"})
    # Task captioning: the caption decoder, {name: transformer|lstm, layers, heads, ...}; it reads the
    # image encoder's tokens (text_encoder, fusion and head are not used by that task).
    decoder: dict | None = None


ModelPart = Literal["image_encoder", "text_encoder", "fusion"]
MODEL_PARTS: tuple[str, ...] = typing.get_args(ModelPart)


@dataclass
class EarlyStoppingConfig:
    """Stop when `monitor` (a metric logged on the val split) has not improved for `patience` epochs;
    the exported model is the one of the best epoch, not the last."""

    patience: int = 3
    monitor: str = "val_acc"
    mode: Literal["max", "min"] = "max"
    min_delta: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_images: int = 32  # every question of each image rides along, so questions per step ~ 20x this
    lr: float = 1e-3
    # The learning rate of pretrained weights that train (tuned text layers, an unfrozen backbone);
    # null: train.lr. Fine-tuning usually wants them 10x slower than the new layers.
    pretrained_lr: float | None = None
    weight_decay: float = 0.01
    warmup_steps: int = 200
    grad_clip: float = 1.0
    # Validate and export an exponential moving average of the weights (decay per step, e.g. 0.998);
    # null: the weights as trained. Lightning's EMAWeightAveraging.
    ema_decay: float | None = None
    # A safety cap on training time (summed over --resume): a run it cuts keeps its checkpoint, says it
    # is undertrained, and continues with --resume. Budgets are epochs; this is not one.
    max_minutes: float | None = None
    accelerator: str = "auto"
    devices: int = 1  # per node
    num_nodes: int = 1
    strategy: str = "auto"  # Lightning's: auto, ddp, fsdp, ...
    precision: str = "32-true"
    num_workers: int = 0
    log_every_n_steps: int = 20
    checkpoint_every_n_steps: int = 200
    progress_bar: bool = True
    progress_every_n_steps: int = 50  # a plain line (step, samples/s, ETA) every this many steps; 0: none
    # A model directory (e.g. one `vlfuse pretrain` wrote) whose encoder and fusion weights start the run;
    # init_parts names the parts it loads (the encoders alone start a model with another fusion).
    init: str | None = None
    init_parts: list[ModelPart] = field(default_factory=lambda: list(MODEL_PARTS))
    # Parts that do not train (no gradient, dropout off): e.g. encoders taken from --init, as UNITER and
    # MMBT read a detector's or a CNN's fixed features.
    freeze: list[ModelPart] = field(default_factory=list)
    # {patience: 3}: stop when val accuracy stops improving, keep the best epoch's weights (needs data.val)
    early_stopping: EarlyStoppingConfig | None = None


@dataclass
class RetrievalConfig:
    """Settings of task retrieval (read by no other task).

    Loss = InfoNCE + hinge_weight * VSE++ hinge + itm_weight * image-text matching on hard negatives
    (the matching part only when model.fusion is set). Evaluation ranks by embedding similarity,
    then re-ranks each query's top rerank_k with the matching head: score = ITC + ITM (LAVIS).
    """

    itm_head: dict = field(default_factory=lambda: {"name": "itm"})  # fused pooled -> match / no match
    itm_weight: float = 1.0
    hinge_weight: float = 0.0  # 0: InfoNCE alone
    hinge_margin: float = 0.2
    hinge_max_violation: bool = True  # VSE++: only the hardest negative counts
    negatives_temperature: float = 1.0  # ITM negatives drawn by softmax(ITC logits / this); 0: hardest
    # Each training caption's edits (one token replaced by another seen between the same neighbours in
    # the training captions: "a red circle" -> "a green circle") as extra negatives of its own image,
    # so the embeddings learn details, not only a caption's gist (NegCLIP; data/caption_edits.py). 0: off.
    caption_edits: int = 0
    rerank_k: int = 16  # 0: report the first stage only
    # What re-scores the top rerank_k: "itm", the matching head's log-odds (needs model.fusion), or
    # "tokens", late interaction of the embedding head's token embeddings from the query's side
    # (ColBERT's MaxSim, heads/retrieval.max_sim; no parameters, no training: any model has it).
    reranker: Literal["itm", "tokens"] = "itm"
    # Re-ranking score = ITC logit (cosine x learned scale) + rerank_weight * the reranker's score
    # (t2i_rerank_weight for text queries ranking images; null: the same); eval.json's rerank_sweep
    # shows R@1 both ways at other weights, to choose them on val.
    rerank_weight: float = 1.0
    t2i_rerank_weight: float | None = None
    # Query-bank normalisation (QB-Norm's inverted softmax; tasks/retrieval/querybank.py): training
    # ends by embedding this many random training images and their captions, kept with the model;
    # evaluation discounts candidates the bank's queries all like, at sharpness querybank_beta
    # (eval.json's querybank_sweep shows R@1 at other betas, to choose it on val). 0: off.
    querybank: int = 0
    querybank_beta: float = 10.0
    # Embed each photo as the mean of its embedding and its left-right mirror's (test-time flip), wherever
    # photos are ranked: evaluation, the query bank, vlfuse index and serve, exported models. With
    # data.feature_cache the mirrored photos' features are cached too.
    flip_average: bool = False
    eval_batch: int = 64

    @property
    def text_query_weight(self) -> float:
        """The re-ranking weight of text queries ranking images: t2i_rerank_weight, else rerank_weight."""
        return self.rerank_weight if self.t2i_rerank_weight is None else self.t2i_rerank_weight


@dataclass
class CaptioningConfig:
    """Settings of task captioning (read by no other task); model.decoder is the decoder.

    Training: teacher forcing, cross-entropy with optional label smoothing. Decoding (eval, predict):
    beam search (beam_size 1 = greedy) ranked by log-prob / ((5 + length) / 6) ** length_penalty (GNMT).
    """

    tokenizer: Literal["words", "pretrained"] = "words"  # words: built from the training captions
    label_smoothing: float = 0.0
    beam_size: int = 3
    length_penalty: float = 0.0  # GNMT alpha; 0 ranks by the plain sum of log-probs
    max_length: int | None = None  # tokens generated, EOS included; null: data.max_question_length - 1
    eval_batch: int = 32  # images decoded at once
    min_word_count: int = 1  # words: rarer training words become [UNK], which is never generated
    # Keep the weights of the validation whose val captions (decoded as above) score best on this
    # metric (e.g. cider_d, bleu_4) instead of the last epoch's; null: no caption decoding during training.
    select_on: Literal["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d"] | None = None
    patience: int | None = None  # with select_on: stop after this many validations without a better score
    # Self-critical sequence training (tasks/captioning/scst.py): the last scst_epochs of train.epochs
    # maximise the CIDEr-D of scst_samples captions sampled per image, at their own learning rate
    # (warm-up and cosine decay again); they start from the best weights so far (select_on), and
    # patience stops only this stage. 0: cross-entropy throughout.
    scst_epochs: int = 0
    scst_samples: int = 5
    scst_lr: float = 5e-5


@dataclass
class PretrainConfig:
    """Settings of task pretrain (see vlfuse.models.pretrain): each objective's weight in the summed
    loss (0 leaves it out: no head, no compute) and the objectives' own settings."""

    objectives: dict = field(default_factory=lambda: {"itc": 1.0, "itm": 1.0, "mlm": 1.0, "mrm": 0.5,
                                                      "translation": 0.0, "adversarial": 0.0, "mmd": 0.0})
    mask_probability: float = 0.15  # MLM: share of caption tokens to predict
    region_mask_probability: float = 0.15  # MRM: share of image tokens to reconstruct
    mrm_classes: int = 32  # MRC-kl: prototypes the masked image tokens' soft labels are drawn over
    mrm_kl_weight: float = 1.0  # MRM = feature regression + this * KL classification
    # translation: the image embedding is perturbed before it is translated (Pham et al. 2019), so
    # the text embedding must be recoverable from a noisy view: Gaussian noise std, then dropout
    translation_noise: float = 0.1
    translation_dropout: float = 0.1
    embed_dim: int = 128  # ITC embedding width
    temperature: float = 0.07  # ITC initial temperature (learned)
    negatives_temperature: float = 1.0  # ITM: negatives drawn by softmax(ITC logits / this); 0: hardest
    # Extra texts for the word tokenizer besides the captions (e.g. the fine-tuning questions), so
    # fine-tuning meets no unknown words. A data section: {format: vqa_v2, root: ..., train: {...}}.
    vocabulary_data: DataConfig | None = None


@dataclass
class MatchingConfig:
    """Settings of task matching (true/false of a statement about an image; read by no other task).

    Statement formats (nlvr, nlvr2, jsonl) give the labels. Caption formats (coco_captions) give
    positives; each caption also gets one negative (see vlfuse.data.matching): `similar`, the most
    similar caption of another image; `attribute`, the caption with one of `attribute_words`
    swapped for another; `mixed`, the two kinds in turn.
    """

    negatives: Literal["similar", "attribute", "mixed"] = "mixed"
    attribute_words: list[str] = field(default_factory=lambda: ["circle", "square", "triangle"])
    # > 0: every split reads the same statements, divided by sentence id (all images of a sentence
    # on one side): this share of the sentences is val/test, the rest train. For NLVR dev alone.
    holdout_sentences: float = 0.0
    holdout_seed: int = 0
    max_images_per_statement: int | None = None  # NLVR renders each scene 6 times: keep the first N


@dataclass
class DialogueConfig:
    """Settings of task dialogue (read by no other task; see vlfuse.tasks.dialogue).

    Each round's context is the image, the question and the history (caption, then the earlier
    rounds' questions and answers, the most recent kept when it is longer than max_history_length
    tokens); the decoder scores the round's candidate answers (VisDial's 100).
    """

    # discriminative: model.head scores the candidates; generative: model.decoder (a caption decoder)
    # writes answers, candidates ranked by log-likelihood.
    decoder: Literal["discriminative", "generative"] = "discriminative"
    max_history_length: int = 96  # tokens of history; the oldest are dropped first
    max_answer_length: int = 16  # tokens of a candidate answer (generative: BOS and EOS included)
    share_text_encoder: bool = True  # discriminative: candidates go through the question encoder, else a copy
    beam_size: int = 3  # generative: the answers predict writes (1 = greedy)
    eval_batch: int = 16  # dialogues at once in evaluation


# Tasks that can be members of task multitask: their models all have an image encoder to share.
MULTITASK_MEMBERS = ("vqa", "retrieval", "captioning", "matching", "classification")


@dataclass
class MultitaskConfig:
    """Settings of task multitask (see vlfuse.tasks.multitask): the member tasks, each with its own config
    file (its data, head and batch size), trained in one run around one pair of encoders (model.dim,
    model.image_encoder, model.text_encoder of the multitask config, which every member must name too).

    Each step trains one member's batch, chosen from (seed, step): round_robin takes the members in turn;
    proportional draws member t with probability n_t / sum n (n: its training images); temperature with
    n_t^(1/temperature) / sum n^(1/temperature) (1 = proportional, large = uniform).
    """

    tasks: dict[str, str] = field(default_factory=dict)  # member task -> its config file
    schedule: Literal["round_robin", "proportional", "temperature"] = "round_robin"
    temperature: float = 2.0


@dataclass
class VQAMCConfig:
    """Settings of task vqa_mc (multiple-choice VQA; read by no other task; see vlfuse.tasks.vqa_mc).

    Each (question, candidate) pair is fused with the image and scored by a match head; the best
    candidate wins. Questions whose data gives no candidates get the answer plus num_choices - 1
    distractors drawn from the split's other answers (same question type first, then answer type).
    """

    num_choices: int = 4
    match_weight: float = 0.5  # loss = cross-entropy over the candidates + this * per-candidate match BCE
    eval_batch: int = 32  # images (with all their questions) scored at once in evaluation


@dataclass
class GenerationConfig:
    """Settings of task generation (text -> image; see vlfuse.tasks.generation).

    The first vq_epochs of train.epochs train the VQ-VAE (image <-> grid of codes), the rest the prior
    (caption -> codes, a causal Transformer with cross-attention to the caption, width model.dim).
    """

    vq_epochs: int = 3
    codes: int = 512  # codebook size
    code_dim: int = 32
    channels: int = 128  # VQ-VAE width (its convolutions run on the code grid)
    downsample: int = 3  # the code grid is image_size / 2**downsample on a side
    commitment: float = 0.25  # weight of the encoder's commitment loss
    # > 0: the decoder paints each pixel as one of this many colours (k-means of the training pixels,
    # as ImageGPT's palette), learnt by cross-entropy; 0: it paints RGB, learnt by mean squared error
    palette: int = 0
    layers: int = 4  # prior blocks
    heads: int = 4
    text_layers: int = 2  # caption encoder blocks
    # share of training captions replaced by "no caption", so the prior also learns the scenes without
    # one: what classifier-free guidance compares with
    caption_dropout: float = 0.0
    temperature: float = 1.0  # sampling: logits / temperature, then the top_k most likely codes
    # sampling: logits = no caption + guidance x (caption - no caption); 1 reads the caption alone, more
    # follows it harder (needs caption_dropout > 0 in training)
    guidance: float = 1.0
    top_k: int | None = 32
    # generate-then-rank (DALL·E's reranking): draw this many images per caption and keep the one the
    # retrieval model in `ranker` (a trained model directory) matches best; 1: no ranking
    candidates: int = 1
    ranker: str | None = None
    eval_batch: int = 100  # images generated at once
    # evaluation: a trained retrieval model directory; adds the R@1 of each generated image against its
    # caption among 100 captions of the split (its own and 99 others)
    retrieval_model: str | None = None


@dataclass
class Config:
    seed: int = 0
    task: Literal["vqa", "retrieval", "captioning", "pretrain", "matching", "classification", "dialogue",
                  "vqa_mc", "multitask", "generation"] = "vqa"
    out_dir: str = "runs/vqa"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    dialogue: DialogueConfig = field(default_factory=DialogueConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    captioning: CaptioningConfig = field(default_factory=CaptioningConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    vqa_mc: VQAMCConfig = field(default_factory=VQAMCConfig)
    multitask: MultitaskConfig = field(default_factory=MultitaskConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read YAML (or start from defaults), apply `key.sub=value` overrides, validate."""
    raw = read_config_file(path) if path is not None else {}
    for item in overrides:
        apply_override(raw, item)
    config = from_dict(Config, raw)
    check_ranges(config)
    check_multitask(config)
    check_knowledge_graph(config)
    check_hflip(config)
    return config


HFLIP_TASKS = ("retrieval", "captioning")  # the tasks whose training photos data.hflip flips


def check_hflip(config: Config) -> None:
    """data.hflip is read by the tasks in HFLIP_TASKS alone."""
    if config.data.hflip and config.task not in HFLIP_TASKS:
        raise ConfigError(f"config key 'data.hflip' is read by task {' and '.join(HFLIP_TASKS)} only, not "
                          f"{config.task}: remove it")


def check_knowledge_graph(config: Config) -> None:
    """data.knowledge_graph is read by graph fusion alone, on VQA, joined to data.scene_graphs."""
    if not config.data.knowledge_graph:
        return
    fusion = (config.model.fusion or {}).get("name")
    if fusion != "graph" or config.task != "vqa":
        raise ConfigError(f"config key 'data.knowledge_graph' is set, but task {config.task} with model.fusion "
                          f"{fusion!r} reads no graph: use task vqa with model.fusion {{name: graph}} "
                          "(configs/kg_shapes.yaml) or set data.knowledge_graph: null")
    if not config.data.scene_graphs:
        raise ConfigError("config key 'data.knowledge_graph' joins the scene graphs, but data.scene_graphs is null: "
                          "set it (e.g. auto), or data.knowledge_graph: null")
    if config.data.knowledge_graph == "per_sample" and config.data.format != "jsonl":
        raise ConfigError(f"config key 'data.knowledge_graph' is per_sample, but data.format is {config.data.format}: "
                          "only JSONL/CSV tables (format jsonl) name a graph per row, in their knowledge_graph field")


# Allowed ranges, (low, high, low inclusive): checked before anything runs, so a bad value is one line
# naming its key, not a ZeroDivisionError mid-training. Every float must also be finite.
_POSITIVE, _AT_LEAST_1, _NON_NEGATIVE = (0, None, False), (1, None, True), (0, None, True)
_SHARE, _PROBABILITY = (0, 1, False), (0, 1, True)
RANGES = {
    "train.epochs": _AT_LEAST_1, "train.batch_images": _AT_LEAST_1, "train.lr": _POSITIVE,
    "train.pretrained_lr": _POSITIVE, "retrieval.querybank": _NON_NEGATIVE, "retrieval.querybank_beta": _POSITIVE,
    "train.weight_decay": _NON_NEGATIVE, "train.warmup_steps": _NON_NEGATIVE, "train.grad_clip": _NON_NEGATIVE,
    "train.ema_decay": _SHARE,
    "train.max_minutes": _POSITIVE, "train.devices": _AT_LEAST_1, "train.num_nodes": _AT_LEAST_1,
    "train.num_workers": _NON_NEGATIVE, "train.log_every_n_steps": _AT_LEAST_1,
    "train.checkpoint_every_n_steps": _AT_LEAST_1, "train.progress_every_n_steps": _NON_NEGATIVE,
    "data.image_size": (8, None, True), "data.max_question_length": _AT_LEAST_1, "data.max_answers": _AT_LEAST_1,
    "data.train_fraction": _SHARE, "data.hflip": _PROBABILITY, "data.shuffle_buffer": _NON_NEGATIVE,
    "data.knowledge_hops": (0, 4, True), "model.dim": _AT_LEAST_1,
    "retrieval.itm_weight": _NON_NEGATIVE, "retrieval.hinge_weight": _NON_NEGATIVE,
    "retrieval.rerank_weight": _NON_NEGATIVE, "retrieval.t2i_rerank_weight": _NON_NEGATIVE,
    "retrieval.hinge_margin": _NON_NEGATIVE, "retrieval.negatives_temperature": _NON_NEGATIVE,
    "retrieval.rerank_k": _NON_NEGATIVE, "retrieval.eval_batch": _AT_LEAST_1, "retrieval.caption_edits": _NON_NEGATIVE,
    "captioning.label_smoothing": (0, 1, True), "captioning.beam_size": _AT_LEAST_1,
    "captioning.length_penalty": _NON_NEGATIVE, "captioning.max_length": _AT_LEAST_1,
    "captioning.eval_batch": _AT_LEAST_1,
    "pretrain.mask_probability": _PROBABILITY, "pretrain.region_mask_probability": _PROBABILITY,
    "pretrain.mrm_classes": _AT_LEAST_1, "pretrain.mrm_kl_weight": _NON_NEGATIVE,
    "pretrain.translation_noise": _NON_NEGATIVE, "pretrain.translation_dropout": (0, 1, True),
    "pretrain.embed_dim": _AT_LEAST_1, "pretrain.temperature": _POSITIVE,
    "pretrain.negatives_temperature": _NON_NEGATIVE,
    "matching.holdout_sentences": (0, 1, True), "matching.max_images_per_statement": _AT_LEAST_1,
    "dialogue.max_history_length": _AT_LEAST_1, "dialogue.max_answer_length": (3, None, True),
    "dialogue.beam_size": _AT_LEAST_1, "dialogue.eval_batch": _AT_LEAST_1,
    "vqa_mc.num_choices": (2, None, True), "vqa_mc.match_weight": _NON_NEGATIVE, "vqa_mc.eval_batch": _AT_LEAST_1,
    "multitask.temperature": _POSITIVE,
    "generation.vq_epochs": _AT_LEAST_1, "generation.codes": (2, None, True), "generation.code_dim": _AT_LEAST_1,
    "generation.channels": _AT_LEAST_1, "generation.downsample": (1, 5, True), "generation.commitment": _NON_NEGATIVE,
    "generation.layers": _AT_LEAST_1, "generation.heads": _AT_LEAST_1, "generation.text_layers": _NON_NEGATIVE,
    "generation.temperature": _POSITIVE, "generation.top_k": _AT_LEAST_1, "generation.eval_batch": _AT_LEAST_1,
    "generation.candidates": _AT_LEAST_1,
}


def check_ranges(config: Config) -> None:
    """Raise ConfigError for the first value outside its range in RANGES, or any NaN / infinite number."""
    for key, value in _leaves(config):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value}")
        if key not in RANGES or value is None:
            continue
        low, high, inclusive = RANGES[key]
        if (value < low if inclusive else value <= low) or (high is not None and value > high):
            bound = (f">= {low}" if inclusive else f"> {low}") + ("" if high is None else f" and <= {high}")
            raise ConfigError(f"config key '{key}' must be {bound}, got {value}")


def check_multitask(config: Config) -> None:
    """Task multitask names its members (known member tasks, each once) and trains no --init / freeze."""
    if config.task != "multitask":
        return
    tasks = config.multitask.tasks
    if not tasks:
        raise ConfigError("config key 'multitask.tasks' must name the member tasks and their config files, "
                          "e.g. {vqa: configs/vqa_shapes.yaml, captioning: configs/captioning_shapes.yaml}")
    for name, path in tasks.items():
        if name not in MULTITASK_MEMBERS:
            raise ConfigError(f"config key 'multitask.tasks.{name}': unknown member task {name!r} "
                              f"(members: {', '.join(MULTITASK_MEMBERS)})")
        if not isinstance(path, str):
            raise ConfigError(f"config key 'multitask.tasks.{name}' must be a config file's path, got {path!r}")
    for key in ("init", "freeze", "early_stopping"):
        if getattr(config.train, key):
            raise ConfigError(f"config key 'train.{key}' is not supported by task multitask: remove it")


def _leaves(obj: Any, prefix: str = "") -> typing.Iterator[tuple[str, Any]]:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The YAML mapping in `path`, on top of the file its `base:` key names (relative to `path`).

    Sections merge key by key; a component spec (a mapping with a `name`) replaces the base's
    whole, since another component's settings would not fit it.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to this file")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: config key 'base' must be a path, got {base!r}")
    return _merge(read_config_file(path.parent / base, _seen + (path.resolve(),)), raw)


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and "name" not in value:
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@functools.cache
def _yaml_loader() -> type:
    import yaml  # imported on first use: importing vlfuse stays light

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))
    return Loader


def load_yaml(text: str) -> Any:
    """yaml.safe_load, except that `3e-4` is a float (YAML 1.2) rather than YAML 1.1's string."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())


def apply_override(raw: dict, item: str) -> None:
    """`train.lr=3e-4` sets raw["train"]["lr"]; the value is parsed as YAML (numbers, lists, null)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    *parents, leaf = key.strip().split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
    node[leaf] = load_yaml(value)


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, naming the first wrong key or value."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(unknown_key_message(f"{prefix}{key}", key, names))
        kwargs[key] = check_type(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


def unknown_key_message(full_key: str, key: str, known: list[str]) -> str:
    # 'lr_rate' is too far from 'lr' for difflib, so also try the key's first word
    close = difflib.get_close_matches(str(key), known, n=1) or [k for k in known if k == str(key).split("_")[0]]
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
    return f"unknown config key '{full_key}'{hint}"


def check_type(value: Any, hint: Any, key: str) -> Any:
    """Return `value` converted to `hint` where that is lossless (int -> float), else raise ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return check_type(value, option, key)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0] from None
        raise ConfigError(f"config key '{key}' has an invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, f"{key}.")
    expected = origin or hint
    if expected is typing.Any or hint is inspect_empty:
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected in (list, tuple) and isinstance(value, (list, tuple)):
        item = args[0] if args else typing.Any
        return [check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(f"config key '{key}' must be {_type_name(expected)}, got {type(value).__name__} {value!r}")
    return value


class inspect_empty:  # stands for "no annotation" when checking constructor parameters
    pass


def _type_name(t: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping",
            list: "a list"}.get(t, getattr(t, "__name__", str(t)))
