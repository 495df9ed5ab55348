"""The Python face of task generation: load a saved generator, draw images for captions.

    from vlfuse.tasks.generation.predict import generate
    images = generate("runs/generation_shapes/model", "a red circle at the top left, ...", n=4, seed=0)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ...config import Config
from ...data.tokenizer import encode_ids, load_tokenizer, pad_ids
from ...errors import ConfigError, DataError
from ...models.saved import CONFIG, TOKENIZER, WEIGHTS, checked_model_dir
from .model import TextToImage


@dataclass
class Generator:
    model: TextToImage
    config: Config
    tokenizer: object


def build_generator(config: Config, vocab_size: int) -> TextToImage:
    g, size = config.generation, config.data.image_size
    if size % 2 ** g.downsample:
        raise ConfigError(f"config key 'data.image_size' ({size}) must be a multiple of 2 ** generation.downsample "
                          f"({2 ** g.downsample})")
    _check_guidance(g.guidance, g.caption_dropout > 0)
    if not 0 <= g.caption_dropout < 1:
        raise ConfigError(f"config key 'generation.caption_dropout' must be in [0, 1), got {g.caption_dropout}")
    if config.model.dim % g.heads:
        raise ConfigError(f"config key 'model.dim' ({config.model.dim}) must be a multiple of generation.heads "
                          f"({g.heads})")
    return TextToImage(vocab_size, size, g.codes, g.code_dim, g.channels, g.downsample, config.model.dim, g.layers,
                       g.heads, g.text_layers, config.data.max_question_length, g.palette, g.caption_dropout > 0)


def _check_guidance(guidance: float, unconditional: bool) -> None:
    if guidance != 1 and not unconditional:
        raise ConfigError(f"config key 'generation.guidance' ({guidance}) needs a model trained with "
                          "generation.caption_dropout > 0 (it learns the 'no caption' context guidance compares "
                          "with); set generation.guidance: 1")


def load_generator(model_dir: str | Path, guidance: float | None = None) -> Generator:
    """A saved generation model (config.yaml, tokenizer.json, model.safetensors); never runs code from it.
    `guidance`: sample with this classifier-free guidance scale instead of the saved one."""
    from safetensors.torch import load_model

    path = Path(model_dir)
    config = checked_model_dir(path, [CONFIG, TOKENIZER, WEIGHTS], "generation")
    if guidance is not None:
        config.generation.guidance = guidance
    tokenizer = load_tokenizer(path / TOKENIZER)
    model = build_generator(config, tokenizer.get_vocab_size())
    try:
        load_model(model, str(path / WEIGHTS))
    except Exception as exc:  # wrong shapes or a damaged file: say which file
        raise DataError(f"weights do not fit the config ({exc})", path=path / WEIGHTS) from None
    return Generator(model.eval(), config, tokenizer)


@torch.no_grad()
def generate_tensors(generator: Generator, texts: list[str], seed: int = 0, batch: int = 100) -> torch.Tensor:
    """Images [len(texts), 3, S, S] in [0, 1], one per text; the same seed and texts give the same images."""
    if not texts or any(not t.strip() for t in texts):
        raise ConfigError("--text: give a non-empty description")
    g = generator.config.generation
    _check_guidance(g.guidance, hasattr(generator.model.prior, "null_text"))
    ids = encode_ids(generator.tokenizer, texts, generator.config.data.max_question_length)
    rng = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(texts), batch):
        input_ids, mask = pad_ids(ids[start: start + batch])
        out.append(generator.model.generate(input_ids, mask, g.temperature, g.top_k, rng, g.guidance))
    return torch.cat(out)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arrays = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a, "RGB") for a in arrays]


def generate(model_dir: str | Path | Generator, text: str, n: int = 1, seed: int = 0) -> list[Image.Image]:
    """`n` images for one description (PIL, the training image size)."""
    if n < 1:
        raise ConfigError(f"--n: must be at least 1, got {n}")
    generator = model_dir if isinstance(model_dir, Generator) else load_generator(model_dir)
    return to_pil(generate_tensors(generator, [text] * n, seed))


def caption_grid(rows: list[tuple[str, list[Image.Image]]], scale: int = 2, text_width: int = 46) -> Image.Image:
    """One picture: each row a caption (wrapped at `text_width` characters) beside its images."""
    import textwrap

    side = rows[0][1][0].width * scale
    columns = max(len(images) for _, images in rows)
    label = 7 * text_width
    grid = Image.new("RGB", (label + columns * (side + 4), len(rows) * (side + 4)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (text, images) in enumerate(rows):
        top = r * (side + 4)
        draw.multiline_text((4, top + 2), "\n".join(textwrap.wrap(text, text_width)), fill="black", spacing=1)
        for c, image in enumerate(images):
            grid.paste(image.resize((side, side), Image.NEAREST), (label + c * (side + 4), top))
    return grid
