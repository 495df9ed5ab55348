"""Structure of the single-stream and graph fusions: what the joint sequence / graph lets through.

The generic contract (shapes, padding, gradients, determinism) is in test_fusion.py.
"""

from __future__ import annotations

import pytest
import torch

from vlfuse.fusion.graph import GraphFusion
from vlfuse.layers.graph import CROSS, SELF, SEQUENCE, SPATIAL, build_edges
from vlfuse.fusion.single_stream import SingleStreamFusion
from vlfuse.types import ExternalGraph, Features, masked_mean

DIM = 16


def features(tokens: torch.Tensor, mask: torch.Tensor, boxes: torch.Tensor | None = None) -> Features:
    return Features(tokens, mask, masked_mean(tokens, mask), boxes)


def line_boxes(b: int, xs: list[float]) -> torch.Tensor:
    """Small boxes centred at (x, 0.5)."""
    x = torch.tensor(xs)
    return torch.stack([x - 0.05, torch.full_like(x, 0.45), x + 0.05, torch.full_like(x, 0.55)], -1).expand(b, -1, -1)


def inputs(b: int = 2, nt: int = 4, nv: int = 3, seed: int = 0, boxes: bool = True):
    """Text: row 1 has one padded word; image: row 1 has one padded token. Image boxes on a line."""
    g = torch.Generator().manual_seed(seed)
    t_mask, v_mask = torch.ones(b, nt, dtype=torch.bool), torch.ones(b, nv, dtype=torch.bool)
    t_mask[1, -1] = v_mask[1, -1] = False
    xs = [0.1 + 0.8 * i / max(nv - 1, 1) for i in range(nv)]
    return (features(torch.randn(b, nv, DIM, generator=g), v_mask, line_boxes(b, xs) if boxes else None),
            features(torch.randn(b, nt, DIM, generator=g), t_mask))


def single_stream(**kw) -> SingleStreamFusion:
    torch.manual_seed(0)
    return SingleStreamFusion(DIM, **{"layers": 2, "heads": 2, "mlp_ratio": 2.0, **kw}).eval()


def graph_fusion(**kw) -> GraphFusion:
    torch.manual_seed(0)
    fusion = GraphFusion(DIM, **{"layers": 1, "heads": 2, "mlp_ratio": 2.0, **kw}).eval()
    with torch.no_grad():  # edge terms start at zero; make them matter in these tests
        for layer in fusion.layers:
            layer.edge_bias.normal_()
            layer.edge_value.normal_()
    return fusion


# ------------------------------------------------------------------ single stream

def test_single_stream_joint_mask_gives_padding_no_weight():
    image, text = inputs()
    out = single_stream()(image, text, need_weights=True)
    nt, nv = text.mask.shape[1], image.mask.shape[1]
    joint_mask = torch.cat([torch.ones(2, 1, dtype=torch.bool), text.mask, image.mask], 1)
    assert out.tokens.shape == (2, 1 + nt + nv, DIM)
    for i in range(2):
        w = out.attentions[f"layer{i}.joint"]
        assert w.shape == (2, 2, 1 + nt + nv, 1 + nt + nv)
        keys = joint_mask[:, None, None, :].expand_as(w)
        assert torch.all(w[~keys] == 0)
        assert w[1, :, :, 1 + nt - 1].abs().sum() == 0  # the padded word
        assert w[1, :, :, -1].abs().sum() == 0  # the padded image token
        assert w[0, :, :, -1].gt(0).all()  # a real image token is read
        t2i = out.attentions[f"layer{i}.text_to_image"]
        assert t2i.shape == (2, 2, nt, nv)
        assert torch.all(t2i[1, :, :, -1] == 0)
        torch.testing.assert_close(t2i.sum(-1), torch.ones(2, 2, nt))


def test_single_stream_modality_embedding_tells_streams_apart():
    fusion = single_stream()
    with torch.no_grad():  # remove every other cue of where a token came from
        fusion.position.weight.zero_()
        fusion.box[0].weight.zero_()
        fusion.box[0].bias.zero_()
    a, b = inputs(nt=3, nv=3, boxes=False)
    a, b = features(a.tokens, b.mask), features(b.tokens, a.mask)  # same layouts, so swappable
    straight, swapped = fusion(a, b).pooled, fusion(b, a).pooled
    assert not torch.allclose(straight, swapped, atol=1e-4)
    with torch.no_grad():
        fusion.modality.weight.zero_()
    # now the joint sequence is the same set of tokens either way: the CLS state cannot tell
    torch.testing.assert_close(fusion(a, b).pooled, fusion(b, a).pooled, atol=1e-5, rtol=0)


def test_single_stream_box_embedding_matters():
    fusion = single_stream()
    image, text = inputs()
    moved = features(image.tokens, image.mask, image.boxes.flip(1))
    with_boxes, moved_boxes = fusion(image, text).pooled, fusion(moved, text).pooled
    without = fusion(features(image.tokens, image.mask), text).pooled
    assert not torch.allclose(with_boxes, moved_boxes, atol=1e-4)
    assert not torch.allclose(with_boxes, without, atol=1e-4)


def test_single_stream_word_readout_is_the_mean_of_the_real_word_states():
    image, text = inputs()
    out = single_stream(readout="words")(image, text)
    nt = text.mask.shape[1]
    torch.testing.assert_close(out.pooled, masked_mean(out.tokens[:, 1:1 + nt], text.mask))
    assert out.pooled.shape == (2, DIM)
    junk = features(torch.where(text.mask[..., None], text.tokens, 100.0), text.mask)  # the padded word is junk
    torch.testing.assert_close(single_stream(readout="words")(image, junk).pooled, out.pooled, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="readout"):
        single_stream(readout="mean")


def test_single_stream_joint_geometry_places_objects_at_their_boxes_and_words_where_they_looked():
    """Layer 1: object pairs carry their pair geometry, words none (they have not looked yet); layer 2:
    a word's row is the geometry seen from its layer-1 focus (its attention on the objects, mean over heads)."""
    from vlfuse.layers.geometry import pair_geometry

    fusion, (image, text) = single_stream(joint_geometry=True), inputs()
    seen = []
    for block in fusion.blocks:
        block.attn.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["relative"]), with_kwargs=True)
    out = fusion(image, text, need_weights=True)
    nt, pairs = text.mask.shape[1], pair_geometry(image.boxes, image.mask)
    torch.testing.assert_close(seen[0][:, nt + 1:, nt + 1:], pairs)
    assert seen[0][:, :nt + 1].abs().sum() == 0 and seen[0][:, :, :nt + 1].abs().sum() == 0
    joint = out.attentions["layer0.joint"][:, :, 1:nt + 1, nt + 1:].mean(1)
    focus = joint / joint.sum(-1, keepdim=True)
    torch.testing.assert_close(seen[1][:, 1:nt + 1, nt + 1:], torch.einsum("btk,bkjf->btjf", focus, pairs),
                               atol=1e-5, rtol=1e-5)
    junk = image.tokens.clone()
    junk[1, -1] = 100.0  # the padded object
    padded = features(junk, image.mask, image.boxes)
    torch.testing.assert_close(fusion(padded, text).pooled, out.pooled, atol=1e-5, rtol=0)
    fusion.train()
    fusion(image, text).pooled.sum().backward()
    assert all(block.attn.relative_k.grad.abs().sum() > 0 for block in fusion.blocks)


def test_single_stream_rejects_text_longer_than_positions():
    image, text = inputs(nt=5)
    with pytest.raises(ValueError, match="max_text_length"):
        single_stream(max_text_length=4)(image, text)


# ------------------------------------------------------------------ graph: edges

def test_build_edges_hand_worked_case():
    # three boxes on a line at x = 0.1, 0.3, 0.8 with k = 1: 0 <-> 1 nearest, 2's nearest is 1
    boxes = line_boxes(1, [0.1, 0.3, 0.8])
    similarity = torch.tensor([[[5.0, 1.0, 0.0],    # word 0 -> image 0
                                [0.0, 1.0, 3.0],    # word 1 -> image 2
                                [0.0, 2.0, 1.0]]])  # word 2 -> image 1
    ones = torch.ones(1, 3, dtype=torch.bool)
    edges = build_edges(ones, ones, boxes, similarity, spatial_k=1, text_window=1, cross_k=1)
    #        w0 w1 w2 i0 i1 i2
    expected = torch.tensor([
        [1, 1, 0, 1, 0, 0],  # w0: itself, w1 (sequence), i0 (cross)
        [1, 1, 1, 0, 0, 1],  # w1: w0, itself, w2, i2
        [0, 1, 1, 0, 1, 0],  # w2: w1, itself, i1
        [1, 0, 0, 1, 1, 0],  # i0: w0 (cross, symmetric), itself, i1 (spatial)
        [0, 0, 1, 1, 1, 1],  # i1: w2, i0, itself, i2 (i2 chose i1: made symmetric)
        [0, 1, 0, 0, 1, 1],  # i2: w1, i1, itself
    ], dtype=torch.bool)
    torch.testing.assert_close(edges[0].any(-1), expected)
    torch.testing.assert_close(edges[0, ..., SELF], torch.eye(6, dtype=torch.bool))
    assert edges[0, 3, 4, SPATIAL] and edges[0, 5, 4, SPATIAL] and not edges[0, 3, 5, SPATIAL]
    assert edges[0, 0, 1, SEQUENCE] and not edges[0, 0, 2, SEQUENCE]
    assert edges[0, 1, 5, CROSS] and edges[0, 5, 1, CROSS] and not edges[0, 1, 4, CROSS]
    assert edges[0].sum(-1).max() == 1  # one type per edge here


def test_graph_padded_nodes_are_isolated():
    image, text = inputs()
    out = graph_fusion(layers=2)(image, text, need_weights=True)
    nt = text.mask.shape[1]
    adjacency = out.attentions["adjacency"]
    for node in (nt - 1, adjacency.shape[-1] - 1):  # row 1's padded word and padded image token
        assert adjacency[1, node].sum() == 0 and adjacency[1, :, node].sum() == 0
        assert adjacency[0, node, node] == 1  # in row 0 the same node is real
        for i in range(2):
            w = out.attentions[f"layer{i}.graph"]
            assert w[1, :, node].sum() == 0 and w[1, :, :, node].sum() == 0
        assert torch.all(out.tokens[1, node] == 0)
    # attention only along edges
    w = out.attentions["layer0.graph"]
    assert torch.all(w[~adjacency[:, None].bool().expand_as(w)] == 0)


def test_graph_without_boxes_connects_all_real_image_nodes():
    image, text = inputs(nv=4, boxes=False)
    adjacency = graph_fusion(spatial_k=1)(image, text, need_weights=True).attentions["adjacency"]
    nt = text.mask.shape[1]
    image_block = adjacency[:, nt:, nt:]
    torch.testing.assert_close(image_block[0], torch.ones(4, 4))
    torch.testing.assert_close(image_block[1], (image.mask[1, :, None] & image.mask[1, None, :]).float())


# ------------------------------------------------------------------ graph: message passing

def test_graph_one_layer_reads_only_neighbours():
    # boxes at x = 0.1, 0.3, 0.8 with k = 1 -> image edges 0-1, 1-2; each word sees its two
    # sequence neighbours and every image node (cross_k = 3), so the graph cannot change
    fusion = graph_fusion(spatial_k=1, cross_k=3)
    g = torch.Generator().manual_seed(1)
    text = features(torch.randn(1, 4, DIM, generator=g), torch.ones(1, 4, dtype=torch.bool))
    image = features(torch.randn(1, 3, DIM, generator=g), torch.ones(1, 3, dtype=torch.bool),
                     line_boxes(1, [0.1, 0.3, 0.8]))
    ref = fusion(image, text, need_weights=True)
    adjacency = ref.attentions["adjacency"][0].bool()
    n = adjacency.shape[0]
    for node in range(n):
        tokens = torch.cat([text.tokens, image.tokens], 1).clone()
        tokens[0, node] += torch.randn(DIM, generator=g)  # not a constant shift: LayerNorm would remove it
        out = fusion(features(tokens[:, 4:], image.mask, image.boxes), features(tokens[:, :4], text.mask))
        changed = (out.tokens[0] - ref.tokens[0]).abs().amax(-1) > 1e-5
        # exactly the nodes that read `node` (it reads itself) change
        torch.testing.assert_close(changed, adjacency[:, node], msg=f"perturbing node {node}")
    assert not adjacency[4, 6] and not adjacency[0, 2]  # some pairs are truly not neighbours


def _external_setup():
    fusion = graph_fusion(relations=4, cross_k=1)
    image, text = inputs(b=2, nt=3, nv=3)
    g = torch.Generator().manual_seed(5)
    entities = torch.randn(2, 2, DIM, generator=g)
    entity_mask = torch.tensor([[True, True], [True, False]])
    return fusion, image, text, entities, entity_mask


def test_external_nodes_without_edges_change_nothing():
    fusion, image, text, entities, entity_mask = _external_setup()
    ref = fusion(image, text)
    empty = ExternalGraph(torch.zeros(2, 1, 3, dtype=torch.long), torch.zeros(2, 1, dtype=torch.bool),
                          entities, entity_mask)
    out = fusion(image, text, graph=empty)
    assert out.tokens.shape == (2, 3 + 3 + 2, DIM)
    torch.testing.assert_close(out.tokens[:, :6], ref.tokens, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooled, ref.pooled, atol=1e-5, rtol=0)


def test_external_relation_edge_changes_exactly_its_endpoints():
    fusion, image, text, entities, entity_mask = _external_setup()
    no_edges = ExternalGraph(torch.zeros(2, 1, 3, dtype=torch.long), torch.zeros(2, 1, dtype=torch.bool),
                             entities, entity_mask)
    ref = fusion(image, text, graph=no_edges)
    # entity 0 (node 6) --relation 2--> image token 1 (node 4), in both rows
    edge = torch.tensor([[[6, 4, 2]], [[6, 4, 2]]])
    out = fusion(image, text, need_weights=True, graph=ExternalGraph(edge, None, entities, entity_mask))
    changed = (out.tokens - ref.tokens).abs().amax(-1) > 1e-5
    expected = torch.zeros(2, 8, dtype=torch.bool)
    expected[:, [4, 6]] = True
    torch.testing.assert_close(changed, expected)
    assert out.attentions["adjacency"][0, 4, 6] == 1 and out.attentions["adjacency"][0, 6, 4] == 1
    # the relation type matters, not only the edge
    other = fusion(image, text, graph=ExternalGraph(torch.tensor([[[6, 4, 3]], [[6, 4, 3]]]), None, entities,
                                                    entity_mask))
    assert not torch.allclose(other.tokens[:, 4], out.tokens[:, 4], atol=1e-5)
    # a masked edge, and an edge to a padded entity (row 1's node 7), carry nothing
    masked = ExternalGraph(edge, torch.tensor([[False], [False]]), entities, entity_mask)
    torch.testing.assert_close(fusion(image, text, graph=masked).tokens, ref.tokens, atol=1e-5, rtol=0)
    to_padded = ExternalGraph(torch.tensor([[[0, 0, 0]], [[7, 0, 1]]]), torch.tensor([[False], [True]]),
                              entities, entity_mask)
    torch.testing.assert_close(fusion(image, text, graph=to_padded).tokens, ref.tokens, atol=1e-5, rtol=0)


def test_external_edges_between_existing_nodes_and_bad_indices():
    fusion, image, text, _, _ = _external_setup()
    ref = fusion(image, text)
    # a scene-graph relation between two detected objects (image nodes 3 and 5), no new nodes
    out = fusion(image, text, graph=ExternalGraph(torch.tensor([[[3, 5, 1]], [[3, 5, 1]]])))
    changed = (out.tokens - ref.tokens).abs().amax(-1) > 1e-5
    assert changed[0, 5] and changed[0, 3]
    with pytest.raises(ValueError, match="relation"):
        fusion(image, text, graph=ExternalGraph(torch.tensor([[[3, 5, 4]], [[3, 5, 0]]])))
    with pytest.raises(ValueError, match="outside"):
        fusion(image, text, graph=ExternalGraph(torch.tensor([[[3, 9, 0]], [[3, 5, 0]]])))


def test_graph_gradients_reach_both_inputs_and_entities():
    fusion, image, text, entities, entity_mask = _external_setup()
    fusion.train()
    image = features(image.tokens.clone().requires_grad_(), image.mask, image.boxes)
    text = features(text.tokens.clone().requires_grad_(), text.mask)
    entities.requires_grad_()
    graph = ExternalGraph(torch.tensor([[[6, 4, 2]], [[6, 4, 2]]]), None, entities, entity_mask)
    out = fusion(image, text, graph=graph)
    (out.pooled.pow(2).sum() + out.tokens.pow(2).sum()).backward()
    for f in (image, text):
        assert f.tokens.grad[f.mask].abs().sum(-1).gt(0).all()
        assert torch.all(f.tokens.grad[~f.mask] == 0)
    assert entities.grad[entity_mask].abs().sum(-1).gt(0).all()
    assert torch.all(entities.grad[~entity_mask] == 0)


def test_question_readout_attends_over_every_real_node_entities_included():
    _, image, text, entities, entity_mask = _external_setup()
    no_edges = ExternalGraph(torch.zeros(2, 1, 3, dtype=torch.long), torch.zeros(2, 1, dtype=torch.bool),
                             entities.clone().requires_grad_(), entity_mask)
    mean = graph_fusion(relations=4, cross_k=1, layers=0)
    mean(image, text, graph=no_edges).pooled.pow(2).sum().backward()
    assert no_edges.nodes.grad is None or torch.all(no_edges.nodes.grad == 0)  # the mean readout never sees them

    fusion = graph_fusion(relations=4, cross_k=1, layers=0, readout="question")
    out = fusion(image, text, need_weights=True, graph=no_edges)
    weights = out.attentions["readout"]
    node_mask = torch.cat([text.mask, image.mask, entity_mask], 1)
    assert weights.shape == (2, 1, 8) and torch.all(weights[:, 0][~node_mask] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 1))
    out.pooled.pow(2).sum().backward()
    assert no_edges.nodes.grad[entity_mask].abs().sum(-1).gt(0).all()  # a lone entity node reaches the answer
    # a padded entity's features change nothing
    moved = entities.clone()
    moved[1, 1] += 10
    padded_moved = ExternalGraph(no_edges.edges, no_edges.edge_mask, moved, entity_mask)
    torch.testing.assert_close(fusion(image, text, graph=padded_moved).pooled[1], out.pooled[1].detach())
    with pytest.raises(ValueError, match="readout"):
        GraphFusion(DIM, readout="max")
