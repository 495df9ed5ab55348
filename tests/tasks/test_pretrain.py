"""Task pretrain and fine-tuning from it: objectives and their weights, a tiny run through the CLI,
`train --init` (weights, tokenizer, refusals) and `data.train_fraction`.

Sized for a busy 2-core CPU: the tiny shapes data of conftest (14 captioned training images of
32 px) and a model of width 16.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import CROSS_ATTENTION, REPO, tiny_model

PRETRAIN_CONFIG = REPO / "configs" / "pretrain_shapes.yaml"
ALL_ON = "pretrain.objectives={itc: 1.0, itm: 1.0, mlm: 1.0, mrm: 0.5, translation: 0.3, adversarial: 0.2, mmd: 0.1}"

# The tiny model, with cross-attention (as the shipped configs).
TINY_MODEL = tiny_model(fusion=CROSS_ATTENTION)


def pretrain_overrides(root: Path, out_dir: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", f"pretrain.vocabulary_data.root={root}", f"out_dir={out_dir}", *TINY_MODEL,
            "data.val=null", "data.test={annotations: captions/captions_train.json, images: images/train}",
            "pretrain.embed_dim=8", "pretrain.mrm_classes=4", "train.progress_bar=false", "train.epochs=1",
            "train.batch_images=4", "train.warmup_steps=1", "train.log_every_n_steps=1", "train.accelerator=cpu",
            "train.max_minutes=null", "train.checkpoint_every_n_steps=1", *extra]


def pretrain_config(root: Path, out_dir: Path, *extra: str):
    from vlfuse.config import load_config

    return load_config(PRETRAIN_CONFIG, pretrain_overrides(root, out_dir, *extra))


def tiny_pretrain_model(root: Path, *extra: str):
    """(PretrainModel, config, tokenizer, a batch of 4 captioned images) on the tiny data."""
    from vlfuse.data.caption_dataset import CaptionDataset, collate_pairs
    from vlfuse.data.loading import read_split
    from vlfuse.models.pretrain import build_pretrain_model
    from vlfuse.tasks.pretrain.data import pretrain_tokenizer

    config = pretrain_config(root, Path("unused"), *extra)
    read = read_split(config.data, "train")
    tokenizer = pretrain_tokenizer(config, [c for s in read.samples for c in s.captions], Path("unused"), False)
    dataset = CaptionDataset(read.samples, tokenizer, 32, 64, read.skipped, progress=False)
    torch.manual_seed(0)
    model = build_pretrain_model(config, tokenizer)
    return model, config, tokenizer, collate_pairs([dataset[i] for i in range(4)])


@pytest.fixture(scope="module")
def pretrained_dir(shapes_root, tmp_path_factory) -> Path:
    """One tiny pre-training run through the Python API (all seven objectives), shared read-only."""
    from vlfuse.tasks import train

    out = tmp_path_factory.mktemp("pretrained") / "run"
    train(pretrain_config(shapes_root, out, ALL_ON, "task=pretrain"), progress=False)
    return out / "model"


# --------------------------------------------------------------------------- objectives

@pytest.mark.parametrize("fusion", ["cross_attention", "co_attention", "concat"])
def test_every_objective_trains_its_head_and_reaches_encoders_and_fusion(shapes_root, fusion):
    model, _, _, batch = tiny_pretrain_model(shapes_root, ALL_ON, f"model.fusion={{name: {fusion}}}")
    out = model.losses(batch, torch.Generator().manual_seed(0))
    assert set(model.heads) == {"itc", "itm", "mlm", "mrm", "translation", "adversarial"}  # mmd has no parameters
    for name in ("itc", "itm", "mlm", "mrm", "translation", "adversarial", "mmd"):
        assert out[name].ndim == 0 and torch.isfinite(out[name]), name
    out["loss"].backward()
    for name, head in model.heads.items():
        grads = [p.grad for p in head.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), f"head {name} got no gradient"
    for part in (model.image_encoder, model.text_encoder, model.fusion):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_objective_weights_mix_the_loss_and_a_zero_weight_adds_nothing(shapes_root):
    model, _, _, batch = tiny_pretrain_model(
        shapes_root, "pretrain.objectives={itc: 1.0, itm: 0.0, mlm: 2.0, mrm: 0.5, translation: 0, adversarial: 0}")
    assert set(model.heads) == {"itc", "mlm", "mrm"}  # a zero weight builds no head
    out = model.losses(batch, torch.Generator().manual_seed(3))
    assert "itm" not in out and "translation" not in out and "mmd" not in out
    torch.testing.assert_close(out["loss"], out["itc"] + 2.0 * out["mlm"] + 0.5 * out["mrm"])

    # The same weights with one more objective at 0: the same loss, to the bit.
    other, _, _, _ = tiny_pretrain_model(
        shapes_root, "pretrain.objectives={itc: 1.0, itm: 0.0, mlm: 2.0, mrm: 0.5, translation: 0, mmd: 0.0}")
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.losses(batch, torch.Generator().manual_seed(3))["loss"], out["loss"])


def test_mlm_predicts_only_masked_caption_words(shapes_root):
    from vlfuse.losses.masking import IGNORE_INDEX, mask_tokens

    model, _, tokenizer, batch = tiny_pretrain_model(shapes_root, "pretrain.mask_probability=0.5")
    m = model.masking
    assert m.mask_id == tokenizer.token_to_id("[MASK]") and tokenizer.token_to_id("[PAD]") in m.special_ids
    masked, labels = mask_tokens(batch["input_ids"], m.mask_id, m.vocab_size, batch["attention_mask"],
                                 m.special_ids, 0.5, generator=torch.Generator().manual_seed(0))
    chosen = labels != IGNORE_INDEX
    assert chosen.any() and not (chosen & ~batch["attention_mask"]).any()  # never padding


@pytest.mark.parametrize("objectives, message", [
    ("{itc: 0, itm: 0, mlm: 0, mrm: 0}", "every weight is 0"),
    ("{itc: -1}", "pretrain.objectives.itc"),
    ("{contrast: 1.0}", "pretrain.objectives.contrast"),
])
def test_bad_objective_weights_are_refused(shapes_root, objectives, message):
    from vlfuse.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        tiny_pretrain_model(shapes_root, f"pretrain.objectives={objectives}")


# --------------------------------------------------------------------------- pretrain through the CLI

def test_pretrain_cli_writes_a_directory_to_fine_tune_from(shapes_root, tmp_path, cli_main):
    from safetensors.torch import load_file

    out = tmp_path / "pre"
    result = cli_main("pretrain", PRETRAIN_CONFIG, *(f"--set={o}" for o in pretrain_overrides(shapes_root, out)))
    assert result.returncode == 0, result.stderr
    assert "--init" in result.stdout and "itc_acc" in result.stdout
    model_dir = out / "model"
    weights = load_file(str(model_dir / "model.safetensors"))
    assert {k.split(".")[0] for k in weights} == {"image_encoder", "text_encoder", "fusion"}
    heads = load_file(str(model_dir / "pretrain_heads.safetensors"))
    assert {k.split(".")[0] for k in heads} == {"itc", "itm", "mlm", "mrm"}  # the config's default mix
    run = json.loads((out / "run.json").read_text())
    assert run["task"] == "pretrain" and run["steps"] == 4 and run["objectives"]["mrm"] == 0.5
    log = (out / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert all(f"train_{name}" in log for name in ("loss", "itc", "itm", "mlm", "mrm"))
    vocab = json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    assert "[MASK]" in vocab and "closest" in vocab  # captions + the VQA questions' words
    assert json.loads((out / "eval.json").read_text())["task"] == "pretrain"


@pytest.mark.slow  # two runs of 8 steps: about a minute on a busy 2-core machine
def test_pretrain_resumes_to_the_weights_of_an_uninterrupted_run(shapes_root, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from vlfuse.tasks.pretrain.module import PretrainModule
    from vlfuse.tasks import train

    settings = ("task=pretrain", "train.epochs=2", "data.test=null")  # 2 epochs of 4 steps
    whole = tmp_path / "whole"
    train(pretrain_config(shapes_root, whole, *settings), progress=False)

    step = PretrainModule.training_step

    def interrupt_at_step_6(self, batch, batch_idx):  # inside the second epoch, as Ctrl-C would
        if self.global_step == 5:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(PretrainModule, "training_step", interrupt_at_step_6)
    parts = tmp_path / "parts"
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        result = train(pretrain_config(shapes_root, parts, *settings), progress=False)
        assert result.interrupted  # Lightning either returns interrupted or exits: both are an interruption
        raise KeyboardInterrupt
    monkeypatch.undo()
    assert not (parts / "model" / "model.safetensors").exists()
    train(pretrain_config(shapes_root, parts, *settings), resume=True, progress=False)
    assert json.loads((parts / "run.json").read_text())["steps"] == 8
    a, b = load_file(str(whole / "model" / "model.safetensors")), load_file(str(parts / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- fine-tuning with --init

def test_init_loads_the_pretrained_encoders_and_fusion(shapes_root, pretrained_dir, tiny_config, tmp_path):
    from vlfuse.data.tokenizer import encode_ids, load_tokenizer, pad_ids
    from vlfuse.models.factory import build_model
    from vlfuse.models.init_weights import init_tokenizer, load_init_weights
    from vlfuse.tasks.pretrain.model import load_pretrained_dir

    config = tiny_config(shapes_root, tmp_path / "ft", *TINY_MODEL)
    questions = ["What is the shape of the red object?", "Is the blue square zorblike?"]  # one new word
    tokenizer = init_tokenizer(pretrained_dir, questions)
    pre_tokenizer = load_tokenizer(pretrained_dir / "tokenizer.json")
    assert tokenizer.get_vocab_size() == pre_tokenizer.get_vocab_size() + 1
    assert all(tokenizer.token_to_id(w) == i for w, i in pre_tokenizer.get_vocab().items())

    torch.manual_seed(1)
    model = build_model(config, tokenizer.get_vocab_size(), 5)
    report = load_init_weights(model, pretrained_dir, config, tokenizer)
    assert report.new == [k for k in model.state_dict() if k.startswith("head.")]
    assert "text_encoder.embed.weight" in report.partial and "text_encoder.pos.weight" in report.partial

    pretrained, _, _ = load_pretrained_dir(pretrained_dir)
    model.eval()
    images = torch.rand(2, 3, 32, 32)
    ids, mask = pad_ids(encode_ids(tokenizer, questions[:1], 32))  # words the pre-training knew
    with torch.no_grad():
        for ours, theirs in ((model.image_encoder(images), pretrained.image_encoder(images)),
                             (model.text_encoder(ids, mask), pretrained.text_encoder(ids, mask))):
            assert torch.equal(ours.tokens, theirs.tokens) and torch.equal(ours.pooled, theirs.pooled)
        image, text = model.image_encoder(images[:1]), model.text_encoder(ids, mask)
        assert torch.equal(model.fusion(image, text).pooled, pretrained.fusion(image, text).pooled)


def test_train_init_cli_fine_tunes_on_a_fraction_of_the_labels(shapes_root, pretrained_dir, write_config, tmp_path,
                                                               cli_main):
    out = tmp_path / "ft"
    config = write_config(tmp_path / "ft.yaml", shapes_root, out, *TINY_MODEL, "data.train_fraction=0.5",
                          "train.epochs=1")
    result = cli_main("train", config, "--init", pretrained_dir)
    assert result.returncode == 0, result.stderr
    assert f"--init {pretrained_dir}: loaded" in result.stdout
    assert "not from --init (as the config builds them): head.*" in result.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["init"]["source"] == str(pretrained_dir) and run["init"]["loaded"] > 0
    assert run["train"]["images"] == 7  # half of the 14 training images, with all their questions
    assert run["train"]["questions"] == 7 * 4


def test_init_refuses_another_architecture(shapes_root, pretrained_dir, write_config, tmp_path, cli_main):
    config = write_config(tmp_path / "ft.yaml", shapes_root, tmp_path / "ft", *TINY_MODEL,
                          "model.fusion={name: cross_attention, layers: 2, heads: 2, dropout: 0.0}")
    result = cli_main("train", config, "--init", pretrained_dir)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert line.startswith("error: --init") and "model.fusion" in line and "architecture" in line


def test_init_accepts_other_training_only_settings(pretrained_dir):
    """Dropout and drop_tokens build no weights: a run may set them apart from the directory's config
    (as the captioning recipe takes the retrieval recipe's image tower without its drop_tokens)."""
    import copy

    from vlfuse.config import load_config
    from vlfuse.errors import ConfigError
    from vlfuse.models.init_weights import check_architecture

    source = load_config(pretrained_dir / "config.yaml")
    run = copy.deepcopy(source)
    run.model.fusion = {**source.model.fusion, "dropout": 0.5}
    run.model.image_encoder = {**source.model.image_encoder, "drop_tokens": 0.3}
    check_architecture(source, run, pretrained_dir)
    run.model.fusion["layers"] = source.model.fusion.get("layers", 1) + 1
    with pytest.raises(ConfigError, match="model.fusion"):
        check_architecture(source, run, pretrained_dir)


def test_init_parts_starts_another_fusion_from_the_pretrained_encoders(shapes_root, pretrained_dir, tiny_config,
                                                                      tmp_path):
    from vlfuse.errors import ConfigError
    from vlfuse.models.factory import build_model
    from vlfuse.models.init_weights import init_tokenizer, load_init_weights
    from vlfuse.tasks.pretrain.model import load_pretrained_dir

    config = tiny_config(shapes_root, tmp_path / "ft", *TINY_MODEL, "model.fusion={name: single_stream, layers: 1, "
                         "heads: 2}", "train.init_parts=[image_encoder, text_encoder]")
    tokenizer = init_tokenizer(pretrained_dir, ["What is the shape of the red object?"])
    model = build_model(config, tokenizer.get_vocab_size(), 5)
    report = load_init_weights(model, pretrained_dir, config, tokenizer)
    assert {k.split(".")[0] for k in report.loaded} == {"image_encoder", "text_encoder"}
    assert {k.split(".")[0] for k in report.new} == {"fusion", "head"}
    assert any(k.startswith("fusion.") for k in report.unused)  # the pre-trained cross-attention, left out
    pretrained, _, _ = load_pretrained_dir(pretrained_dir)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval().image_encoder(images).tokens, pretrained.image_encoder(images).tokens)
    # the parts it loads must still match: another image encoder is refused by name
    config = tiny_config(shapes_root, tmp_path / "ft", *TINY_MODEL, "model.image_encoder={name: vit, patch_size: 8}",
                         "train.init_parts=[image_encoder]")
    with pytest.raises(ConfigError, match="model.image_encoder"):
        load_init_weights(build_model(config, tokenizer.get_vocab_size(), 5), pretrained_dir, config, tokenizer)
    # a run whose word ids differ (another tokenizer, as a pretrained text encoder brings) may still
    # take the image encoder alone
    from vlfuse.data.tokenizer import build_tokenizer

    config = tiny_config(shapes_root, tmp_path / "ft", *TINY_MODEL, "train.init_parts=[image_encoder]")
    other = build_tokenizer(["zebra quokka red object shape"])
    report = load_init_weights(build_model(config, other.get_vocab_size(), 5), pretrained_dir, config, other)
    assert {k.split(".")[0] for k in report.loaded} == {"image_encoder"}
    config.train.init_parts = ["image_encoder", "text_encoder"]
    with pytest.raises(ConfigError, match="tokenizer gives"):
        load_init_weights(build_model(config, other.get_vocab_size(), 5), pretrained_dir, config, other)
    config.train.init_parts = []
    with pytest.raises(ConfigError, match="train.init_parts' is empty"):
        load_init_weights(build_model(config, tokenizer.get_vocab_size(), 5), pretrained_dir, config, tokenizer)


def test_train_freeze_keeps_the_init_encoders_fixed_and_trains_the_rest(shapes_root, pretrained_dir, write_config,
                                                                        tmp_path, cli_main):
    from safetensors.torch import load_file

    out = tmp_path / "frozen"
    config = write_config(tmp_path / "ft.yaml", shapes_root, out, *TINY_MODEL, "train.epochs=1",
                          "model.fusion={name: single_stream, layers: 1, heads: 2}",
                          "train.init_parts=[image_encoder, text_encoder]",
                          "train.freeze=[image_encoder, text_encoder]")
    result = cli_main("train", config, "--init", pretrained_dir)
    assert result.returncode == 0, result.stderr
    before = load_file(str(pretrained_dir / "model.safetensors"))
    after = load_file(str(out / "model" / "model.safetensors"))
    for key in (k for k in after if k.startswith("image_encoder.")):
        assert torch.equal(after[key], before[key]), key
    embed = after["text_encoder.embed.weight"]  # rows of words the pre-training knew; new words keep their start
    assert torch.equal(embed[: len(before["text_encoder.embed.weight"])], before["text_encoder.embed.weight"])
    run = json.loads((out / "run.json").read_text())
    trained = sum(v.numel() for k, v in after.items() if k.split(".")[0] in ("fusion", "head"))
    assert run["frozen"] == ["image_encoder", "text_encoder"] and run["trainable_parameters"] == trained
    assert run["steps"] > 0


def test_init_refuses_a_directory_that_is_not_a_model(shapes_root, pretrained_dir, write_config, tmp_path, cli_main):
    import shutil

    broken = Path(shutil.copytree(pretrained_dir, tmp_path / "broken"))
    (broken / "model.safetensors").unlink()
    config = write_config(tmp_path / "ft.yaml", shapes_root, tmp_path / "ft", *TINY_MODEL)
    result = cli_main("train", config, "--init", broken)
    assert result.returncode == 2 and "model.safetensors is missing" in result.stderr and str(broken) in result.stderr
    result = cli_main("train", config, "--init", tmp_path / "nowhere")
    assert result.returncode == 2 and "no such model directory" in result.stderr


def test_init_refuses_weights_of_other_shapes(shapes_root, pretrained_dir, tiny_config, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from vlfuse.errors import ConfigError
    from vlfuse.models.factory import build_model
    from vlfuse.models.init_weights import init_tokenizer, load_init_weights

    damaged = Path(shutil.copytree(pretrained_dir, tmp_path / "damaged"))
    weights = load_file(str(damaged / "model.safetensors"))
    key = next(k for k in weights if k.startswith("fusion.") and weights[k].ndim == 2)
    weights[key] = torch.zeros(weights[key].shape[0], weights[key].shape[1] + 1)
    save_file(weights, str(damaged / "model.safetensors"))
    config = tiny_config(shapes_root, tmp_path / "ft", *TINY_MODEL)
    tokenizer = init_tokenizer(damaged, ["What is the shape of the red object?"])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_init_weights(build_model(config, tokenizer.get_vocab_size(), 5), damaged, config, tokenizer)


# --------------------------------------------------------------------------- data.train_fraction

def test_train_fraction_draws_whole_images_deterministically_by_seed(shapes_root, tiny_config, tmp_path):
    from vlfuse.data.loading import read_split
    from vlfuse.data.subsample import sample_images
    from vlfuse.errors import ConfigError

    samples = read_split(tiny_config(shapes_root, tmp_path).data, "train").samples
    images = lambda kept: {s.image_path for s in kept}  # noqa: E731
    half = sample_images(samples, 0.5, seed=0)
    assert len(images(half)) == 7 and len(half) == 7 * 4  # every question of a kept image
    assert sample_images(samples, 0.5, seed=0) == half
    assert sample_images(list(reversed(samples)), 0.5, seed=0) == [s for s in reversed(samples) if s in half]
    assert any(images(sample_images(samples, 0.5, seed=s)) != images(half) for s in (1, 2, 3))
    assert len(images(sample_images(samples, 0.01, seed=0))) == 1
    assert sample_images(samples, 1.0, seed=5) is samples
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="data.train_fraction"):
            sample_images(samples, bad, seed=0)


def test_pretrain_refuses_question_data_and_other_tasks(tmp_path, cli_main):
    result = cli_main("pretrain", REPO / "configs" / "vqa_shapes.yaml", f"--set=out_dir={tmp_path / 'x'}")
    assert result.returncode == 2 and "data.format" in result.stderr and "task pretrain reads captions" in result.stderr
    result = cli_main("pretrain", REPO / "configs" / "retrieval_shapes.yaml", f"--set=out_dir={tmp_path / 'y'}")
    assert result.returncode == 2 and "vlfuse pretrain runs task pretrain" in result.stderr


def test_a_pretrained_directory_is_for_fine_tuning_not_for_predicting(pretrained_dir):
    from vlfuse.errors import DataError
    from vlfuse.models.saved import load_model_dir

    with pytest.raises(DataError, match="--init"):
        load_model_dir(pretrained_dir)
