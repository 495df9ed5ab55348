"""The Python face of task generation: load a saved generator, draw images for captions.

    from vlfuse.tasks.generation.predict import generate
    images = generate("runs/generation_shapes/model", "a red circle at the top left, ...", n=4, seed=0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ...config import Config
from ...data.tokenizer import encode_ids, load_tokenizer, pad_ids
from ...errors import ConfigError, DataError
from ...models.saved import CONFIG, TOKENIZER, WEIGHTS, checked_model_dir
from .model import TextToImage
from .rank import Ranker, best_of


@dataclass
class Generator:
    model: TextToImage
    config: Config
    tokenizer: object
    rankers: dict[str, Ranker] = field(default_factory=dict)  # loaded once per directory

    def ranker(self) -> Ranker | None:
        """generation.ranker's retrieval model when generation.candidates > 1, else None."""
        g = self.config.generation
        _check_ranking(g.candidates, g.ranker)
        if g.candidates == 1:
            return None
        if g.ranker not in self.rankers:
            self.rankers[g.ranker] = Ranker(g.ranker)
        return self.rankers[g.ranker]


def build_generator(config: Config, vocab_size: int) -> TextToImage:
    g, size = config.generation, config.data.image_size
    if size % 2 ** g.downsample:
        raise ConfigError(f"config key 'data.image_size' ({size}) must be a multiple of 2 ** generation.downsample "
                          f"({2 ** g.downsample})")
    _check_guidance(g.guidance, g.caption_dropout > 0)
    _check_ranking(g.candidates, g.ranker)
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


def _check_ranking(candidates: int, ranker: str | None) -> None:
    if candidates < 1:
        raise ConfigError(f"config key 'generation.candidates' must be at least 1, got {candidates}")
    if candidates > 1 and not ranker:
        raise ConfigError(f"config key 'generation.candidates' ({candidates}) needs generation.ranker: a trained "
                          "retrieval model directory that picks the best of the candidates")


def load_generator(model_dir: str | Path, guidance: float | None = None, candidates: int | None = None,
                   ranker: str | Path | None = None) -> Generator:
    """A saved generation model (config.yaml, tokenizer.json, model.safetensors); never runs code from it.
    `guidance`, `candidates`, `ranker`: sample with these instead of the saved generation settings."""
    from safetensors.torch import load_model

    path = Path(model_dir)
    config = checked_model_dir(path, [CONFIG, TOKENIZER, WEIGHTS], "generation")
    for key, value in (("guidance", guidance), ("candidates", candidates), ("ranker", ranker)):
        if value is not None:
            setattr(config.generation, key, str(value) if key == "ranker" else value)
    tokenizer = load_tokenizer(path / TOKENIZER)
    model = build_generator(config, tokenizer.get_vocab_size())
    try:
        load_model(model, str(path / WEIGHTS))
    except Exception as exc:  # wrong shapes or a damaged file: say which file
        raise DataError(f"weights do not fit the config ({exc})", path=path / WEIGHTS) from None
    return Generator(model.eval(), config, tokenizer)


@torch.no_grad()
def generate_tensors(generator: Generator, texts: list[str], seed: int = 0, batch: int = 100) -> torch.Tensor:
    """Images [len(texts), 3, S, S] in [0, 1], one per text; the same seed and texts give the same images.
    With generation.candidates K > 1, each text's image is the best of K drawn (generation.ranker's pick)."""
    if not texts or any(not t.strip() for t in texts):
        raise ConfigError("--text: give a non-empty description")
    g = generator.config.generation
    _check_guidance(g.guidance, hasattr(generator.model.prior, "null_text"))
    ranker = generator.ranker()
    drawn = [t for t in texts for _ in range(g.candidates)]  # each text's K candidates side by side
    ids = encode_ids(generator.tokenizer, drawn, generator.config.data.max_question_length)
    rng = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(drawn), batch):
        input_ids, mask = pad_ids(ids[start: start + batch])
        out.append(generator.model.generate(input_ids, mask, g.temperature, g.top_k, rng, g.guidance))
    images = torch.cat(out)
    if ranker is None:
        return images
    scores = ranker.match(images, drawn).view(len(texts), g.candidates)
    return best_of(images.view(len(texts), g.candidates, *images.shape[1:]), scores)


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
