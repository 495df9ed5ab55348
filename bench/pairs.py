"""vlfuse architectures beside their Hugging Face reference implementations, at one matched size.

Each pair gets the same width, depth, heads, feed-forward size, token counts, batch, loss and
optimiser, and random weights on both sides, so the samples/s ratio measures implementation
overhead rather than a difference in the model. One pair, `blip_coco`, also trains on batches
shaped like COCO's (five captions to an image), where vlfuse encodes each image once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlfuse.encoders.text import TransformerTextEncoder
from vlfuse.encoders.vit import ViTImageEncoder
from vlfuse.fusion.cross_attention import CoAttentionFusion
from vlfuse.fusion.single_stream import SingleStreamFusion
from vlfuse.heads.retrieval import DualEncoderHead
from vlfuse.layers.transformer import TransformerBlock
from vlfuse.models.retrieval import RetrievalModel
from vlfuse.types import Features, grid_boxes, masked_mean


@dataclass(frozen=True)
class Size:
    dim: int = 256
    heads: int = 4
    layers: int = 2
    text_tokens: int = 16
    regions: int = 49  # 7 x 7 region / grid features, as EfficientNet-Lite0 gives
    image_size: int = 64
    patch_size: int = 8
    vocab: int = 1000
    classes: int = 10
    batch: int = 64
    captions_per_image: int = 5  # COCO's, for the pair that trains on COCO-shaped batches


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    regions: torch.Tensor  # [B, R, dim] detector-style features
    boxes: torch.Tensor  # [B, R, 4]
    pixels: torch.Tensor  # [B, 3, S, S] in [0, 1]
    labels: torch.Tensor
    image_index: torch.Tensor  # [B]: row i is about image image_index[i] (COCO-shaped batches repeat images)


def make_batch(size: Size, batch: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(size.text_tokens // 2, size.text_tokens + 1, (batch,), generator=g)
    mask = (torch.arange(size.text_tokens)[None] < lengths[:, None]).long()
    ids = torch.randint(3, size.vocab, (batch, size.text_tokens), generator=g) * mask
    side = int(size.regions ** 0.5)
    return Batch(ids, mask, torch.randn(batch, size.regions, size.dim, generator=g),
                 grid_boxes(side, side, batch).contiguous(),
                 torch.rand(batch, 3, size.image_size, size.image_size, generator=g),
                 torch.randint(0, size.classes, (batch,), generator=g), torch.arange(batch))


def coco_shaped(b: Batch, captions_per_image: int) -> Batch:
    """The same captions, `captions_per_image` to an image, as COCO caption training batches come
    (64 captions are 13 images): `pixels` holds each image once, `image_index` says whose caption
    each row is."""
    image_index = torch.arange(len(b.labels)) // captions_per_image
    return Batch(b.input_ids, b.attention_mask, b.regions, b.boxes, b.pixels[: int(image_index[-1]) + 1], b.labels,
                 image_index)


@dataclass
class Pair:
    name: str
    reference: str
    ours: nn.Module
    ours_loss: Callable[[nn.Module, Batch], torch.Tensor]
    ref: nn.Module
    ref_loss: Callable[[nn.Module, Batch], torch.Tensor]
    captions_per_image: int = 1  # > 1: both sides train on COCO-shaped batches (see coco_shaped)

    def batch(self, size: Size) -> Batch:
        batch = make_batch(size, size.batch)
        return coco_shaped(batch, self.captions_per_image) if self.captions_per_image > 1 else batch


def _text_features(embed: nn.Embedding, b: Batch) -> Features:
    mask = b.attention_mask.bool()
    tokens = embed(b.input_ids)
    return Features(tokens, mask, masked_mean(tokens, mask))


def _region_features(tokens: torch.Tensor, b: Batch) -> Features:
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
    return Features(tokens, mask, tokens.mean(1), b.boxes)


class SingleStreamClassifier(nn.Module):
    """Word embeddings + projected regions (or ViT patches) -> SingleStreamFusion -> linear classes."""

    def __init__(self, s: Size, patches: bool):
        super().__init__()
        self.embed = nn.Embedding(s.vocab, s.dim)
        self.patches = ViTImageEncoder(s.dim, s.image_size, s.patch_size, layers=0) if patches else None
        self.visual = None if patches else nn.Linear(s.dim, s.dim)
        self.fusion = SingleStreamFusion(s.dim, s.layers, s.heads, max_text_length=s.text_tokens)
        self.head = nn.Linear(s.dim, s.classes)

    def forward(self, b: Batch) -> torch.Tensor:
        image = self.patches(b.pixels) if self.patches is not None else _region_features(self.visual(b.regions), b)
        return self.head(self.fusion(image, _text_features(self.embed, b)).pooled)


class CoAttentionClassifier(nn.Module):
    """LXMERT's layout: a language encoder, an object encoder, then co-attention layers."""

    def __init__(self, s: Size, language_layers: int, object_layers: int, cross_layers: int):
        super().__init__()
        self.text = TransformerTextEncoder(s.vocab, s.dim, language_layers, s.heads, s.text_tokens)
        self.visual = nn.Linear(s.dim, s.dim)
        self.box = nn.Linear(4, s.dim)
        self.visual_norm = nn.LayerNorm(s.dim)
        self.objects = nn.ModuleList(TransformerBlock(s.dim, s.heads) for _ in range(object_layers))
        self.fusion = CoAttentionFusion(s.dim, cross_layers, s.heads)
        self.head = nn.Linear(s.dim, s.classes)

    def forward(self, b: Batch) -> torch.Tensor:
        v = self.visual_norm(self.visual(b.regions) + self.box(b.boxes))
        for block in self.objects:
            v, _ = block(v)
        return self.head(self.fusion(_region_features(v, b), self.text(b.input_ids, b.attention_mask)).pooled)


def _cross_entropy(model: nn.Module, b: Batch) -> torch.Tensor:
    return F.cross_entropy(model(b), b.labels)


class _PooledClassifier(nn.Module):
    """A reference model's pooled output -> the same linear classes as ours."""

    def __init__(self, model: nn.Module, call: Callable[[nn.Module, Batch], torch.Tensor], s: Size):
        super().__init__()
        self.model, self.call, self.head = model, call, nn.Linear(s.dim, s.classes)

    def forward(self, b: Batch) -> torch.Tensor:
        return self.head(self.call(self.model, b))


def _bert_sizes(s: Size) -> dict:
    return dict(vocab_size=s.vocab, hidden_size=s.dim, num_attention_heads=s.heads, intermediate_size=4 * s.dim,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def visualbert_pair(s: Size) -> Pair:
    from transformers import VisualBertConfig, VisualBertModel

    ref = VisualBertModel(VisualBertConfig(**_bert_sizes(s), num_hidden_layers=s.layers, visual_embedding_dim=s.dim))
    call = lambda m, b: m(input_ids=b.input_ids, attention_mask=b.attention_mask, visual_embeds=b.regions,
                          visual_attention_mask=torch.ones(b.regions.shape[:2], dtype=torch.long)).pooler_output
    return Pair("single_stream (regions)", "VisualBertModel", SingleStreamClassifier(s, patches=False), _cross_entropy,
                _PooledClassifier(ref, call, s), _cross_entropy)


def vilt_pair(s: Size) -> Pair:
    from transformers import ViltConfig, ViltModel

    ref = ViltModel(ViltConfig(**_bert_sizes(s), num_hidden_layers=s.layers, image_size=s.image_size,
                               patch_size=s.patch_size, max_position_embeddings=s.text_tokens),
                    add_pooling_layer=True)
    call = lambda m, b: m(input_ids=b.input_ids, attention_mask=b.attention_mask, pixel_values=b.pixels,
                          pixel_mask=torch.ones(len(b.pixels), s.image_size, s.image_size, dtype=torch.long)
                          ).pooler_output
    return Pair("single_stream (patches)", "ViltModel", SingleStreamClassifier(s, patches=True), _cross_entropy,
                _PooledClassifier(ref, call, s), _cross_entropy)


def lxmert_pair(s: Size) -> Pair:
    from transformers import LxmertConfig, LxmertModel

    layers = dict(l_layers=1, r_layers=1, x_layers=s.layers)
    ref = LxmertModel(LxmertConfig(**_bert_sizes(s), **layers, visual_feat_dim=s.dim, visual_pos_dim=4))
    call = lambda m, b: m(input_ids=b.input_ids, attention_mask=b.attention_mask, visual_feats=b.regions,
                          visual_pos=b.boxes).pooled_output
    return Pair("co_attention", "LxmertModel", CoAttentionClassifier(s, 1, 1, s.layers), _cross_entropy,
                _PooledClassifier(ref, call, s), _cross_entropy)


def clip_pair(s: Size) -> Pair:
    from transformers import CLIPConfig, CLIPModel

    tower = dict(hidden_size=s.dim, intermediate_size=4 * s.dim, num_hidden_layers=s.layers,
                 num_attention_heads=s.heads, attention_dropout=0.0)
    ref = CLIPModel(CLIPConfig(text_config=dict(**tower, vocab_size=s.vocab, max_position_embeddings=s.text_tokens),
                               vision_config=dict(**tower, image_size=s.image_size, patch_size=s.patch_size),
                               projection_dim=s.dim))
    ours = RetrievalModel(ViTImageEncoder(s.dim, s.image_size, s.patch_size, s.layers, s.heads),
                          TransformerTextEncoder(s.vocab, s.dim, s.layers, s.heads, s.text_tokens),
                          DualEncoderHead(s.dim, embed_dim=s.dim))
    return Pair("dual encoder", "CLIPModel", ours,
                lambda m, b: m.head.loss(*m(b.pixels, b.input_ids, b.attention_mask)), ref,
                lambda m, b: m(input_ids=b.input_ids, attention_mask=b.attention_mask, pixel_values=b.pixels,
                               return_loss=True).loss)


def _blip_models(s: Size) -> tuple[nn.Module, nn.Module]:
    """Captioning: a ViT over patches, then a Transformer decoder with cross-attention, teacher forcing."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    from vlfuse.heads.caption_decoders import TransformerCaptionDecoder
    from vlfuse.models.captioning import CaptioningModel

    tower = dict(hidden_size=s.dim, intermediate_size=4 * s.dim, num_hidden_layers=s.layers,
                 num_attention_heads=s.heads)
    ref = BlipForConditionalGeneration(BlipConfig(
        vision_config=dict(**tower, image_size=s.image_size, patch_size=s.patch_size, attention_dropout=0.0),
        text_config=dict(**tower, vocab_size=s.vocab, max_position_embeddings=s.text_tokens, encoder_hidden_size=s.dim,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, bos_token_id=1, eos_token_id=2,
                         sep_token_id=2, pad_token_id=0)))
    ours = CaptioningModel(ViTImageEncoder(s.dim, s.image_size, s.patch_size, s.layers, s.heads),
                           TransformerCaptionDecoder(s.dim, s.vocab, s.text_tokens, s.layers, s.heads, dropout=0.0))
    return ours, ref


def _caption_loss(m: nn.Module, b: Batch) -> torch.Tensor:
    """Ours: each image in `b.pixels` encoded once, read by its captions through `image_index`."""
    logits = m(b.pixels, b.input_ids, b.image_index)[:, :-1]
    targets = b.input_ids[:, 1:].masked_fill(b.attention_mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def _blip_loss(m: nn.Module, b: Batch) -> torch.Tensor:
    """The reference takes one image per caption, as its (image, caption) training pairs come."""
    return m(pixel_values=b.pixels.index_select(0, b.image_index), input_ids=b.input_ids,
             attention_mask=b.attention_mask, labels=b.input_ids.masked_fill(b.attention_mask == 0, -100)).loss


def blip_pair(s: Size) -> Pair:
    ours, ref = _blip_models(s)
    return Pair("captioning (ViT + Transformer decoder)", "BlipForConditionalGeneration", ours, _caption_loss,
                ref, _blip_loss)


def blip_coco_pair(s: Size) -> Pair:
    """The captioning pair on COCO-shaped batches (5 captions an image): vlfuse encodes each image
    once for its captions, the reference once per caption. Same model, same outputs, less work."""
    ours, ref = _blip_models(s)
    return Pair("captioning, 5 captions an image", "BlipForConditionalGeneration", ours, _caption_loss, ref,
                _blip_loss, captions_per_image=s.captions_per_image)


PAIRS: dict[str, Callable[[Size], Pair]] = {
    "visualbert": visualbert_pair,
    "vilt": vilt_pair,
    "lxmert": lxmert_pair,
    "clip": clip_pair,
    "blip": blip_pair,
    "blip_coco": blip_coco_pair,
}
