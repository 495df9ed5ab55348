"""vlfuse.data.caption_edits: hard negative captions by a one-token edit, a token replaced by another that
the training captions show between the same two neighbours."""

from __future__ import annotations

import torch

from vlfuse.data.caption_edits import CaptionEdits

# ids: 1 = BOS, 2 = EOS, 3 = "a", 4 = "red", 5 = "green", 6 = "circle", 7 = "square", 8 = "dog"
CAPTIONS = [[1, 3, 4, 6, 2], [1, 3, 5, 6, 2], [1, 3, 4, 7, 2], [1, 8, 2]]


def test_substitutes_are_the_tokens_seen_between_the_same_neighbours():
    edits = CaptionEdits(CAPTIONS)
    # "a _ circle": red or green; "red _ EOS": circle or square. A context seen with one token only
    # ("BOS _ red": a) has nothing to swap it with.
    assert {k: v.tolist() for k, v in edits.substitutes.items()} == {(3, 6): [4, 5], (4, 2): [6, 7]}


def test_an_edit_changes_exactly_one_token_to_another_seen_in_its_context():
    edits = CaptionEdits(CAPTIONS)
    generator = torch.Generator().manual_seed(0)
    made = {tuple(edits.edit([1, 3, 4, 6, 2], generator)) for _ in range(50)}
    # "a red circle": red -> green (context a _ circle) or circle -> square (context red _ EOS)
    assert made == {(1, 3, 5, 6, 2), (1, 3, 4, 7, 2)}


def test_a_caption_with_nothing_to_edit_gives_none_and_edits_are_seeded():
    edits = CaptionEdits(CAPTIONS)
    assert edits.edit([1, 8, 2], torch.Generator().manual_seed(0)) is None
    first = [edits.edit([1, 3, 5, 6, 2], torch.Generator().manual_seed(seed)) for seed in range(8)]
    again = [edits.edit([1, 3, 5, 6, 2], torch.Generator().manual_seed(seed)) for seed in range(8)]
    assert first == again


def test_a_batch_of_edits_keeps_each_caption_padding_and_flags_what_was_made():
    edits = CaptionEdits(CAPTIONS)
    ids = torch.tensor([[1, 3, 4, 6, 2], [1, 8, 2, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    edited, edited_mask, made = edits.edit_batch(ids, mask, 3, torch.Generator().manual_seed(0))
    assert edited.shape == edited_mask.shape == (2, 3, 5) and made.tolist() == [[True] * 3, [False] * 3]
    assert ((edited[0] != ids[0]).sum(1) == 1).all()  # one token each
    assert (edited[1] == ids[1]).all()  # nothing to edit: the caption itself, flagged as not made
    assert (edited_mask == mask[:, None]).all()
