"""A batch's scene graphs (data/scene_graph.py) -> graph fusion's ExternalGraph, one per question.

Entity nodes are the text encoder's pooled embedding of each entity's name, so entities and
question words live in one space and the name's word embeddings learn from the graph too. Edges,
as (src, dst, relation) over the fusion's node list [words, image tokens, entities]:

  relation triples   subject entity -> object entity, the data's relation (left_of, nearest, ...)
  depicts            entity -> the image token whose box overlaps it most (IoU > 0): symbols to pixels
  mentions           question word -> each entity whose name holds that word (e.g. "red" -> "red circle")

A knowledge graph (data/knowledge_graph.py) arrives already joined to the scene graph: its entities
are more entities (placed nowhere, so none depicts a token), its triples and kg_link edges more triples.

A graph belongs to an image; with image_index (one image, many questions) it is built once per
image and repeated for each question (mentions alone depend on the question).
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.scene_graph import RELATION_ID, SceneGraphBatch
from ..errors import ConfigError
from ..types import ExternalGraph, Features, fusion_trait


def reads_graph(fusion: nn.Module) -> bool:
    return fusion_trait(fusion, "accepts_graph")


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes a [B, M, 4] and b [B, N, 4] (x0, y0, x1, y1) -> [B, M, N]."""
    low = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])
    high = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (high - low).clamp_min(0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp_min(0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp_min(0).prod(-1)
    return inter / (area_a[:, :, None] + area_b[:, None, :] - inter).clamp_min(1e-9)


def entity_features(text_encoder: nn.Module, graph: SceneGraphBatch, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, M, D]: the pooled text embedding of each real entity's name; padded entities are zero."""
    b, m, length = graph.entity_ids.shape
    real = graph.entity_mask.reshape(-1)
    nodes = torch.zeros(b * m, dim, dtype=dtype, device=graph.entity_ids.device)
    if real.any():  # only the real names go through the encoder
        names = text_encoder(graph.entity_ids.reshape(-1, length)[real],
                             graph.entity_token_mask.reshape(-1, length)[real])
        nodes = nodes.index_put((real.nonzero().squeeze(1),), names.pooled.to(dtype))
    return nodes.view(b, m, dim)


def external_graph(text_encoder: nn.Module, fusion: nn.Module, graph: SceneGraphBatch, image: Features,
                   text: Features, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   image_index: torch.Tensor | None) -> ExternalGraph:
    """The ExternalGraph of each question. image: per image ([B_img, Nv, D], before any index_select);
    text, input_ids, attention_mask: per question; graph: per image."""
    if not reads_graph(fusion):
        raise ConfigError(f"fusion {type(fusion).__name__} reads no scene graph: use model.fusion {{name: graph}} "
                          "or set data.scene_graphs: null")
    b_img, m, _ = graph.entity_ids.shape
    if image.tokens.shape[0] != b_img:
        raise ValueError(f"scene graphs for {b_img} images, image features for {image.tokens.shape[0]}")
    nt, nv = text.tokens.shape[1], image.tokens.shape[1]
    first = nt + nv  # node index of entity 0
    device = graph.entity_ids.device
    entity = torch.arange(m, device=device) + first
    edges = [torch.stack([graph.relations[..., 0] + first, graph.relations[..., 1] + first,
                          graph.relations[..., 2]], -1)]
    masks = [graph.relation_mask]
    if image.boxes is not None:
        iou = box_iou(graph.entity_boxes.to(image.boxes.dtype), image.boxes).masked_fill(~image.mask[:, None, :], -1.0)
        best, token = iou.max(-1)
        edges.append(torch.stack([entity.expand(b_img, m), token + nt,
                                  torch.full_like(token, RELATION_ID["depicts"])], -1))
        masks.append(graph.entity_mask & (best > 0))
    index = torch.arange(b_img, device=device) if image_index is None else image_index
    edges, masks = [torch.cat(edges, 1).index_select(0, index)], [torch.cat(masks, 1).index_select(0, index)]
    entity_mask = graph.entity_mask.index_select(0, index)
    if input_ids.shape[1] == nt:  # text nodes are the input tokens: match words against entity names
        names, words = graph.entity_ids.index_select(0, index), graph.entity_content.index_select(0, index)
        named = ((input_ids[:, :, None, None] == names[:, None]) & words[:, None]).any(-1)  # [B_q, Nt, M]
        named &= attention_mask.bool()[:, :, None] & entity_mask[:, None, :]
        word = torch.arange(nt, device=device)[:, None].expand(nt, m)
        pairs = torch.stack([word, entity[None].expand(nt, m), torch.full_like(word, RELATION_ID["mentions"])], -1)
        edges.append(pairs.reshape(1, nt * m, 3).expand(len(index), -1, -1))
        masks.append(named.reshape(len(index), nt * m))
    nodes = entity_features(text_encoder, graph, text.tokens.shape[-1], text.tokens.dtype).index_select(0, index)
    return ExternalGraph(torch.cat(edges, 1), torch.cat(masks, 1), nodes, entity_mask)
