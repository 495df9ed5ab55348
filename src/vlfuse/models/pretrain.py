"""PretrainModel: the encoders + fusion of a VQA-style model, with one head per pre-training objective.

The encoders and the fusion are built from the same `model:` section as task vqa (a VQA model's
head is left out), so their weights drop into that model for fine-tuning (`vlfuse train --init`).

Objectives (weights from `pretrain.objectives`; a zero weight builds no head and computes nothing):

  itc          symmetric InfoNCE between projected pooled image / caption features (CLIP, ALBEF)
  itm          matching head on the fused pair, negatives drawn from the ITC similarities (ALBEF)
  mlm          BERT masking of the caption, each masked word predicted from the fused text token
  mrm          UNITER masked region modelling on the image tokens: feature regression (MRFR) plus
               KL classification (MRC-kl) whose soft labels are the target token's softmax over
               fixed random prototypes (we have no detector to supply class distributions)
  translation  image pooled, perturbed (noise + dropout) -> caption pooled embedding (Pham et al. 2019), target detached
  adversarial  modality discriminator behind gradient reversal (Ganin & Lempitsky 2015)
  mmd          multi-bandwidth MMD between the pooled image and caption features

Every batch carries every enabled objective (mixed batches); the loss is their weighted sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import PretrainConfig
from ..errors import ConfigError
from ..heads.retrieval import DualEncoderHead, ITMHead
from ..losses.adversarial import ModalityDiscriminator
from ..losses.alignment import mmd_loss
from ..losses.itm import itm_loss, itm_pairs, sample_hard_negatives
from ..losses.masking import IGNORE_INDEX, mask_tokens
from ..losses.mlm import mlm_loss
from ..losses.mrm import choose_masked_regions, mask_regions, mrc_kl_loss, mrfr_loss
from ..losses.translation import CrossModalTranslator
from ..types import Features, FusionOutput, fusion_trait, masked_mean, token_spans
from .vlm import check_text_input

OBJECTIVES = ("itc", "itm", "mlm", "mrm", "translation", "adversarial", "mmd")
DEFAULT_WEIGHTS = {"itc": 1.0, "itm": 1.0, "mlm": 1.0, "mrm": 0.5, "translation": 0.0, "adversarial": 0.0,
                   "mmd": 0.0}
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

def objective_weights(config: PretrainConfig) -> dict[str, float]:
    """`pretrain.objectives` over the defaults, checked: known names, numbers >= 0, one above 0."""
    given = config.objectives
    for name, value in given.items():
        if name not in OBJECTIVES:
            raise ConfigError(f"unknown pre-training objective 'pretrain.objectives.{name}' "
                              f"(known: {', '.join(OBJECTIVES)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"config key 'pretrain.objectives.{name}' must be a number >= 0, got {value!r}")
    weights = {name: float(given.get(name, DEFAULT_WEIGHTS[name])) for name in OBJECTIVES}
    if not any(weights.values()):
        raise ConfigError("config key 'pretrain.objectives': every weight is 0, nothing to pre-train")
    return weights


class MLMHead(nn.Module):
    """BERT's prediction head: dense + GELU + LayerNorm, then scores over the vocabulary."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.decoder = nn.Linear(dim, vocab_size)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(states))


class MRMHead(nn.Module):
    """Masked image token -> (regressed features [.., D], class logits [.., K]).

    Its input is the fused state at the token's place, plus an embedding of the token's box so that
    fusions returning only a pooled vector still say which token to reconstruct. The K prototypes
    are fixed (a buffer, seeded): the soft label of a token is softmax(cos(token, prototypes) / 0.1).
    """

    def __init__(self, dim: int, classes: int, seed: int = 0):
        super().__init__()
        self.box = nn.Linear(4, dim)
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.regress = nn.Linear(dim, dim)
        self.classify = nn.Linear(dim, classes)
        prototypes = torch.randn(classes, dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("prototypes", nn.functional.normalize(prototypes, dim=-1))

    def forward(self, states: torch.Tensor, boxes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if boxes is not None:
            states = states + self.box(boxes.to(states.dtype))
        h = self.transform(states)
        return self.regress(h), self.classify(h)

    def soft_labels(self, targets: torch.Tensor) -> torch.Tensor:
        cosine = nn.functional.normalize(targets.detach().float(), dim=-1) @ self.prototypes.T
        return (cosine / 0.1).softmax(-1)


@dataclass
class Masking:
    """Token ids the MLM objective must never choose or draw, and its [MASK] id."""

    mask_id: int
    special_ids: tuple[int, ...]
    vocab_size: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "Masking":
        mask_id = tokenizer.token_to_id("[MASK]")
        if mask_id is None:
            raise ConfigError("objective mlm needs a [MASK] token in the tokenizer (word tokenizers that "
                              "`vlfuse pretrain` builds have one; so do BERT-family ones)")
        specials = tuple(i for i in (tokenizer.token_to_id(t) for t in SPECIAL_TOKENS) if i is not None)
        return cls(mask_id, specials, tokenizer.get_vocab_size())


class PretrainModel(nn.Module):
    """Encoders + fusion (saved for fine-tuning) and `heads`, one per enabled objective."""

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, fusion: nn.Module, dim: int,
                 settings: PretrainConfig, masking: Masking | None, seed: int = 0):
        super().__init__()
        check_text_input(text_encoder, fusion)
        if getattr(text_encoder, "embeddings_only", False):
            raise ConfigError("task pretrain needs whole-sentence text features: fusions that run the text "
                              "model themselves (mmbt) do not fit it")
        self.image_encoder, self.text_encoder, self.fusion = image_encoder, text_encoder, fusion
        self.settings, self.weights = settings, objective_weights(settings)
        on = {name for name, w in self.weights.items() if w > 0}
        if "mlm" in on and masking is None:
            raise ConfigError("objective mlm needs the tokenizer's [MASK] id")
        self.masking = masking
        heads = {}
        if "itc" in on:
            heads["itc"] = DualEncoderHead(dim, settings.embed_dim, settings.temperature)
        if "itm" in on:
            heads["itm"] = ITMHead(dim)
        if "mlm" in on:
            heads["mlm"] = MLMHead(dim, masking.vocab_size)
        if "mrm" in on:
            heads["mrm"] = MRMHead(dim, settings.mrm_classes, seed)
        if "translation" in on:
            heads["translation"] = CrossModalTranslator(dim, noise_std=settings.translation_noise,
                                                        dropout=settings.translation_dropout)
        if "adversarial" in on:
            heads["adversarial"] = ModalityDiscriminator(dim)
        self.heads = nn.ModuleDict(heads)

    def backbone(self) -> nn.ModuleDict:
        """The parts fine-tuning reuses, under the names VisionLanguageModel gives them."""
        return nn.ModuleDict({"image_encoder": self.image_encoder, "text_encoder": self.text_encoder,
                              "fusion": self.fusion})

    def encode_images(self, images: torch.Tensor) -> Features:
        if images.dtype == torch.uint8:
            images = images.float() / 255
        return self.image_encoder(images)

    # ------------------------------------------------------------------ objectives

    def losses(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """{"loss": weighted sum, each enabled objective's loss, and accuracies where they exist}.

        batch: images [B, 3, S, S] and captions (input_ids, attention_mask [B, L]), row i a pair.
        generator: seeds masking and negative sampling (on the batch's device), so a resumed run
        draws what the interrupted one would have.
        """
        w = self.weights
        image = self.encode_images(batch["images"])
        text = self.text_encoder(batch["input_ids"], batch["attention_mask"])
        out: dict[str, torch.Tensor] = {}
        similarity = None
        if w["itc"]:
            head = self.heads["itc"]
            image_emb, text_emb = head(image, text)
            out["itc"] = head.loss(image_emb, text_emb)
            similarity = image_emb @ text_emb.T
            target = torch.arange(len(similarity), device=similarity.device)
            out["itc_acc"] = (similarity.argmax(1) == target).float().mean()
            similarity = similarity * head.scale
        if w["itm"]:
            out["itm"], out["itm_acc"] = self._itm(image, text, batch, similarity, generator)
        if w["mlm"]:
            out["mlm"], out["mlm_acc"] = self._mlm(image, batch, generator)
        if w["mrm"]:
            out["mrm"] = self._mrm(image, text, generator)
        if w["translation"]:
            out["translation"] = self.heads["translation"].loss(image.pooled, text.pooled)
        if w["adversarial"]:
            out["adversarial"] = self.heads["adversarial"].loss(image.pooled, text.pooled)
        if w["mmd"]:
            out["mmd"] = mmd_loss(image.pooled, text.pooled)
        out["loss"] = sum(w[name] * out[name] for name in OBJECTIVES if w[name])
        return out

    def _itm(self, image: Features, text: Features, batch: dict, similarity: torch.Tensor | None,
             generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        size = len(ids)
        positives = _same_caption(ids, mask)
        eye = torch.eye(size, dtype=torch.bool, device=ids.device)
        negatives = ~(positives | eye)
        if negatives.any(1).all() and negatives.any(0).all():
            # Without ITC every other caption is as likely (uniform draw over equal scores).
            scores = similarity if similarity is not None else torch.zeros(size, size, device=ids.device)
            drawn = sample_hard_negatives(scores, positives, self.settings.negatives_temperature, generator)
            image_index, text_index, labels = itm_pairs(*drawn)
        else:  # a batch of one caption: positives only
            image_index = text_index = torch.arange(size, device=ids.device)
            labels = torch.ones_like(image_index)
        fused = self.fusion(image.index_select(image_index), text.index_select(text_index))
        logits = self.heads["itm"](fused)
        return itm_loss(logits, labels), (logits.argmax(-1) == labels).float().mean()

    def _mlm(self, image: Features, batch: dict, generator: torch.Generator | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.masking
        masked, labels = mask_tokens(batch["input_ids"], m.mask_id, m.vocab_size, batch["attention_mask"],
                                     m.special_ids, self.settings.mask_probability, generator=generator)
        text = self.text_encoder(masked, batch["attention_mask"])
        fused = self.fusion(image, text)
        states = _text_states(self.fusion, fused, text, image)
        chosen = labels != IGNORE_INDEX
        logits = self.heads["mlm"](states[chosen])  # only the masked places reach the vocabulary
        target = labels[chosen]
        accuracy = (logits.argmax(-1) == target).float().mean() if len(target) else logits.new_zeros(())
        return mlm_loss(logits, target) if len(target) else states.sum() * 0.0, accuracy

    def _mrm(self, image: Features, text: Features, generator: torch.Generator | None) -> torch.Tensor:
        head = self.heads["mrm"]
        chosen = choose_masked_regions(image.mask, self.settings.region_mask_probability, generator=generator)
        tokens = mask_regions(image.tokens, chosen)
        masked = Features(tokens, image.mask, masked_mean(tokens, image.mask), image.boxes)
        fused = self.fusion(masked, text)
        states = _image_states(self.fusion, fused, text, masked)
        predicted, logits = head(states, image.boxes)
        target = image.tokens.detach()  # the unmasked tokens; no gradient, or the encoder could chase its own target
        loss = mrfr_loss(predicted, target, chosen)
        if self.settings.mrm_kl_weight:
            loss = loss + self.settings.mrm_kl_weight * mrc_kl_loss(logits, head.soft_labels(target), chosen)
        return loss


def _same_caption(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, B] bool: rows i != j hold the same caption, so neither is the other's negative."""
    ids = input_ids.masked_fill(~attention_mask.bool(), -1)
    same = (ids[:, None, :] == ids[None, :, :]).all(-1)
    return same & ~torch.eye(len(ids), dtype=torch.bool, device=ids.device)


def _layout(fusion: nn.Module, fused: FusionOutput, text: Features, image: Features
            ) -> tuple[int, int | None] | None:
    """(text start, image start or None) in fused.tokens, from the fusion's token_layout; None when
    it has no word states (then the pooled output stands in: see `_text_states`, `_image_states`)."""
    layout = fusion_trait(fusion, "token_layout")
    if layout is None or "text" not in layout or fused.tokens is None:
        return None
    spans = token_spans(layout, text.tokens.shape[1], image.tokens.shape[1])
    if fused.tokens.shape[1] < max(span.stop for span in spans.values()):
        return None
    image_span = spans.get("image")
    return spans["text"].start, None if image_span is None else image_span.start


def _text_states(fusion: nn.Module, fused: FusionOutput, text: Features, image: Features) -> torch.Tensor:
    """[B, L, D]: each word's fused state; for fusions without word states, the word's own features
    plus the fused pooled vector (so the image still informs the prediction)."""
    layout = _layout(fusion, fused, text, image)
    if layout is None:
        return text.tokens + fused.pooled[:, None, :]
    start = layout[0]
    return fused.tokens[:, start: start + text.tokens.shape[1]]


def _image_states(fusion: nn.Module, fused: FusionOutput, text: Features, image: Features) -> torch.Tensor:
    """[B, N, D]: each image token's fused state, or the fused pooled vector at every token."""
    layout = _layout(fusion, fused, text, image)
    n = image.tokens.shape[1]
    if layout is None or layout[1] is None:
        return fused.pooled[:, None, :].expand(-1, n, -1)
    return fused.tokens[:, layout[1]: layout[1] + n]


def build_pretrain_model(config, tokenizer) -> PretrainModel:
    """The PretrainModel of `config` (its `model:` section, head aside, and `pretrain:` section)."""
    from .factory import FUSIONS, build_component, build_encoders

    weights = objective_weights(config.pretrain)
    masking = Masking.from_tokenizer(tokenizer) if weights["mlm"] else None
    image_encoder, text_encoder = build_encoders(config, tokenizer.get_vocab_size())
    fusion = build_component(FUSIONS, config.model.fusion, "model.fusion", dim=config.model.dim)
    return PretrainModel(image_encoder, text_encoder, fusion, config.model.dim, config.pretrain, masking, config.seed)
