"""Tokenizer, answer vocabulary, image-grouped dataset, collation and the resumable epoch sampler."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from vlfuse.data.answers import AnswerVocab, normalize_answer
from vlfuse.data.formats.common import SkipLog
from vlfuse.data.records import VQASample
from vlfuse.data.tokenizer import PAD, UNK, build_tokenizer, encode_ids, load_tokenizer, pad_ids
from vlfuse.data.vqa_dataset import IGNORE_INDEX, EpochSampler, GroupedVQADataset, collate_groups
from vlfuse.errors import DataError

QUESTIONS = [
    "What is the shape of the red object?",
    "Is the BLUE object on the left?",
    "红色物体是什么形状？",
    "离蓝色物体最近的物体是什么形状？",
]


# --------------------------------------------------------------------------- tokenizer

@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(QUESTIONS)


def tokens(tokenizer, text: str) -> list[str]:
    return tokenizer.encode(text).tokens


def test_special_tokens_have_fixed_ids(tokenizer):
    assert tokenizer.token_to_id(PAD) == 0  # pad_ids pads with 0 and the embeddings use padding_idx=0
    assert tokenizer.token_to_id(UNK) == 1


def test_english_is_lowercased_and_punctuation_split(tokenizer):
    assert tokens(tokenizer, "Is the BLUE object on the left?") == ["is", "the", "blue", "object", "on", "the",
                                                                  "left", "?"]
    assert tokenizer.encode("WHAT Is").ids == tokenizer.encode("what is").ids


def test_each_cjk_character_is_a_token(tokenizer):
    assert tokens(tokenizer, "红色物体是什么形状？") == ["红", "色", "物", "体", "是", "什", "么", "形", "状", "？"]
    # Unseen CJK characters are unknown one by one, not as one word.
    assert tokens(tokenizer, "紫色物体") == [UNK, "色", "物", "体"]


def test_mixed_language_question(tokenizer):
    assert tokens(tokenizer, "red物体?") == ["red", "物", "体", "?"]


def test_unknown_words_become_unk(tokenizer):
    ids = tokenizer.encode("What is the colour of the purple object?").ids
    unk = tokenizer.token_to_id(UNK)
    assert ids.count(unk) == 2  # "colour" and "purple"
    assert tokens(tokenizer, "zebra") == [UNK]


def test_encode_ids_truncates_and_is_never_empty(tokenizer):
    long = " ".join(["the"] * 50)
    ids = encode_ids(tokenizer, [long, "red", "", "   "], max_length=5)
    assert len(ids[0]) == 5 and len(ids[1]) == 1
    assert ids[2] == ids[3] == [tokenizer.token_to_id(UNK)]  # nothing to encode -> one [UNK]


def test_tokenizer_save_load_round_trip(tokenizer, tmp_path):
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert loaded.get_vocab() == tokenizer.get_vocab()
    for q in QUESTIONS + ["An UNSEEN question 紫?"]:
        assert loaded.encode(q).ids == tokenizer.encode(q).ids


def test_pad_ids_mask_marks_exactly_the_real_tokens():
    seqs = [[5, 6, 7], [8], [9, 10]]
    ids, mask = pad_ids(seqs)
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == mask.shape == (3, 3)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    ids, mask = pad_ids([[1, 2]], pad_id=7)
    assert mask.all() and ids.tolist() == [[1, 2]]
    ids, _ = pad_ids([[3], [1, 2]], pad_id=7)
    assert ids.tolist() == [[3, 7], [1, 2]]


# --------------------------------------------------------------------------- answers

def test_answer_order_is_frequency_then_alphabetical():
    answers = ["no", "yes", "2", "yes", "circle", "no", "square", "yes", "no", "2", "circle", "3"]
    vocab = AnswerVocab.build(answers, max_answers=100)
    # counts: no 3, yes 3, 2 2, circle 2, 3 1, square 1
    assert vocab.answers == ["no", "yes", "2", "circle", "3", "square"]
    assert AnswerVocab.build(list(reversed(answers)), 100).answers == vocab.answers  # not file order
    assert AnswerVocab.build(answers, max_answers=3).answers == ["no", "yes", "2"]


def test_answers_are_normalised():
    assert normalize_answer("  Yes  ") == "yes"
    assert normalize_answer("Two\t  Words\n") == "two words"
    vocab = AnswerVocab.build(["Yes", "yes ", " YES", "no"], 10)
    assert vocab.answers == ["yes", "no"]
    assert vocab.index("  yEs ") == 0 and vocab.index("NO") == 1


def test_unknown_answer_has_no_index():
    vocab = AnswerVocab.build(["yes", "no"], 10)
    assert vocab.index("maybe") is None
    assert vocab.index(None) is None
    assert len(vocab) == 2 and vocab[0] == "no" and vocab[1] == "yes"  # tie: alphabetical


def test_empty_answer_list_is_refused():
    with pytest.raises(ValueError, match="empty"):
        AnswerVocab.build([], 10)


def test_answer_vocab_save_load_round_trip(tmp_path):
    vocab = AnswerVocab.build(["是", "否", "是", "circle", "2"], 10)
    vocab.save(tmp_path / "answers.json")
    loaded = AnswerVocab.load(tmp_path / "answers.json")
    assert loaded.answers == vocab.answers == ["是", "2", "circle", "否"]
    assert "是" in (tmp_path / "answers.json").read_text(encoding="utf-8")  # kept readable, not escaped
    assert all(loaded.index(a) == vocab.index(a) for a in vocab.answers)


# --------------------------------------------------------------------------- grouped dataset

def write_png(path: Path, color: tuple[int, int, int], size: int = 20) -> Path:
    Image.new("RGB", (size, size), color).save(path)
    return path


@pytest.fixture
def images(tmp_path):
    """Three good images (different sizes get resized), one truncated PNG, one missing file."""
    good = [write_png(tmp_path / "a.png", (255, 0, 0)), write_png(tmp_path / "b.png", (0, 255, 0), 40),
            write_png(tmp_path / "c.png", (0, 0, 255))]
    corrupt = tmp_path / "corrupt.png"
    write_png(corrupt, (9, 9, 9), 64)
    corrupt.write_bytes(corrupt.read_bytes()[:60])
    return {"good": good, "corrupt": corrupt, "missing": tmp_path / "missing.png"}


def sample(qid: int, image: Path, question: str, answer: str | None) -> VQASample:
    return VQASample(qid, image.stem, image, question, answer, (answer,) if answer else ())


@pytest.fixture
def samples(images):
    a, b, c = images["good"]
    # Interleaved on purpose: grouping must collect each image's questions in their original order.
    return [
        sample(1, a, "What is the shape of the red object?", "circle"),
        sample(2, b, "Is the blue object on the left?", "yes"),
        sample(3, images["corrupt"], "What is the shape of the red object?", "square"),
        sample(4, a, "Is the BLUE object on the left?", "no"),
        sample(5, images["missing"], "红色物体是什么形状？", "circle"),
        sample(6, c, "红色物体是什么形状？", "purple"),  # not among the answers
        sample(7, b, "What is the shape of the red object?", "Circle"),
        sample(8, a, "离蓝色物体最近的物体是什么形状？", None),  # no answer at all
    ]


@pytest.fixture
def vocab():
    return AnswerVocab.build(["circle", "yes", "no", "square"], 10)


def test_dataset_groups_questions_by_image_and_skips_bad_images(samples, images, tokenizer, vocab):
    log = SkipLog("skip")
    ds = GroupedVQADataset(samples, tokenizer, vocab, image_size=16, max_length=8, skip_log=log, progress=False)
    a, b, c = images["good"]
    assert len(ds) == 3
    assert [g.image_path for g in ds.groups] == [a, b, c]  # first-seen order
    assert [[s.question_id for s in g.samples] for g in ds.groups] == [[1, 4, 8], [2, 7], [6]]
    assert ds.num_questions == 6
    # Bad images: one record each, naming the file; their questions are dropped.
    assert log.count == 2
    reasons = [str(e) for e in log.skipped]
    assert any(str(images["corrupt"]) in r for r in reasons)
    assert any(str(images["missing"]) in r and "not found" in r for r in reasons)
    assert log.as_dict()["count"] == 2
    # Images are decoded once, resized, uint8 RGB.
    assert ds.images.shape == (3, 3, 16, 16) and ds.images.dtype == torch.uint8
    image, group = ds[0]
    assert image.shape == (3, 16, 16) and group is ds.groups[0]
    assert image[0].float().mean() > 200 and image[1].float().mean() < 50  # red
    # Tokens and labels line up with the samples, truncated to max_length.
    assert all(len(g.token_ids) == len(g.samples) == len(g.labels) for g in ds.groups)
    assert all(0 < len(ids) <= 8 for g in ds.groups for ids in g.token_ids)
    assert ds.groups[0].token_ids[0] == tokenizer.encode("What is the shape of the red object?").ids[:8]


def test_answers_outside_the_vocabulary_are_ignored_and_counted(samples, tokenizer, vocab):
    ds = GroupedVQADataset(samples, tokenizer, vocab, 16, 8, SkipLog("skip"), progress=False)
    labels = {s.question_id: label for g in ds.groups for s, label in zip(g.samples, g.labels)}
    assert labels[1] == vocab.index("circle") and labels[7] == vocab.index("circle")  # "Circle" normalised
    assert labels[2] == vocab.index("yes") and labels[4] == vocab.index("no")
    assert labels[6] == IGNORE_INDEX == -100  # "purple"
    assert labels[8] == IGNORE_INDEX  # no answer
    assert ds.unanswerable == 2


@pytest.mark.parametrize("bad", ["corrupt", "missing"])
def test_bad_image_raises_under_error_policy(bad, images, tokenizer, vocab):
    a = images["good"][0]
    data = [sample(1, a, "What is the shape of the red object?", "circle"),
            sample(2, images[bad], "Is the blue object on the left?", "yes")]
    with pytest.raises(DataError) as exc:
        GroupedVQADataset(data, tokenizer, vocab, 16, 8, SkipLog("error"), progress=False)
    assert str(images[bad]) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_dataset_of_only_bad_images_is_empty(images, tokenizer, vocab):
    log = SkipLog("skip")
    ds = GroupedVQADataset([sample(1, images["missing"], "red?", "yes")], tokenizer, vocab, 16, 8, log,
                           progress=False)
    assert len(ds) == 0 and ds.num_questions == 0 and ds.images.shape == (0, 3, 16, 16) and log.count == 1


def test_collate_maps_questions_to_their_images(samples, tokenizer, vocab):
    ds = GroupedVQADataset(samples, tokenizer, vocab, 16, 8, SkipLog("skip"), progress=False)
    items = [ds[2], ds[0], ds[1]]  # 1, 3 and 2 questions
    batch = collate_groups(items)
    assert batch["images"].shape == (3, 3, 16, 16)
    assert torch.equal(batch["images"][0], ds.images[2])
    assert batch["image_index"].tolist() == [0, 1, 1, 1, 2, 2]
    assert [s.question_id for s in batch["samples"]] == [6, 1, 4, 8, 2, 7]
    assert batch["labels"].tolist() == ds.groups[2].labels + ds.groups[0].labels + ds.groups[1].labels
    n = len(batch["samples"])
    assert batch["input_ids"].shape[0] == batch["attention_mask"].shape[0] == n
    token_ids = ds.groups[2].token_ids + ds.groups[0].token_ids + ds.groups[1].token_ids
    for row, ids in enumerate(token_ids):
        assert batch["attention_mask"][row].sum() == len(ids)
        assert batch["input_ids"][row, : len(ids)].tolist() == ids
    # Every question's image row is the image its sample names.
    for s, i in zip(batch["samples"], batch["image_index"].tolist()):
        assert items[i][1].image_path == s.image_path
    training = collate_groups(items, with_samples=False)
    assert "samples" not in training and torch.equal(training["image_index"], batch["image_index"])


# --------------------------------------------------------------------------- epoch sampler

def test_sampler_is_deterministic_per_seed_and_epoch():
    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again repeats the epoch
    assert sorted(a) == list(range(50))
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(EpochSampler(50, seed=4)) != list(EpochSampler(50, seed=3))


def test_sampler_order_changes_between_epochs():
    s = EpochSampler(50, seed=0)
    orders = []
    for epoch in range(3):
        s.set_epoch(epoch)
        orders.append(list(s))
    assert orders[0] != orders[1] != orders[2] != orders[0]
    assert all(sorted(o) == list(range(50)) for o in orders)


def test_unshuffled_sampler_keeps_order():
    s = EpochSampler(7, shuffle=False)
    s.set_epoch(5)
    assert list(s) == list(range(7))


@pytest.mark.parametrize("world_size", [1, 3])
@pytest.mark.parametrize("skip", [0, 1, 4, 9])
def test_skip_resumes_exactly_where_a_full_pass_continues(world_size, skip):
    for rank in range(world_size):
        full = EpochSampler(29, seed=7, rank=rank, world_size=world_size)
        full.set_epoch(2)
        expected = list(full)
        resumed = EpochSampler(29, seed=7, rank=rank, world_size=world_size)
        resumed.set_epoch(2)
        resumed.skip = skip
        assert list(resumed) == expected[skip:]
        assert list(resumed) == expected, "skip applies to the next pass only"
        assert len(resumed) == len(expected)  # the length Lightning sees is the full epoch's


@pytest.mark.parametrize("size,world_size", [(12, 2), (13, 2), (14, 4), (10, 3), (5, 5), (3, 4), (2, 3)])
def test_ranks_partition_the_data_with_equal_lengths(size, world_size):
    per_rank = [list(EpochSampler(size, seed=1, rank=r, world_size=world_size)) for r in range(world_size)]
    lengths = {len(p) for p in per_rank}
    assert lengths == {len(EpochSampler(size, seed=1, rank=0, world_size=world_size))}, per_rank
    assert len(per_rank[0]) == -(-size // world_size)
    counts = Counter(i for p in per_rank for i in p)
    assert set(counts) == set(range(size)), "every sample reaches some process"
    padding = sum(counts.values()) - size
    assert padding == len(per_rank[0]) * world_size - size < world_size
    assert all(c in (1, 2) for c in counts.values())
    # Same seed and epoch in every process: the ranks agree on one global order.
    global_order = list(EpochSampler(size, seed=1))
    interleaved = [per_rank[k % world_size][k // world_size] for k in range(len(per_rank[0]) * world_size)]
    assert interleaved[:size] == global_order


def test_ranks_get_equal_lengths_when_there_are_far_fewer_samples_than_ranks():
    per_rank = [list(EpochSampler(1, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert [len(p) for p in per_rank] == [1, 1, 1]


def test_empty_sampler():
    s = EpochSampler(0)
    assert len(s) == 0 and list(s) == []
