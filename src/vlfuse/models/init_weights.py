"""Start a run from another model directory's encoders and fusion (`vlfuse train CONFIG --init DIR`).

DIR is any vlfuse model directory (what `vlfuse pretrain` writes, or a trained model). The parts
named in train.init_parts load (by default the two encoders and the fusion, so that a model with
another fusion can take just the encoders): DIR's config.yaml must describe those parts as the
run's config does, its tokenizer.json must give every word it knows the same id as the run's
tokenizer when the text encoder loads (`extend_tokenizer` makes one that does), and every
weight is shape-checked. Embedding tables are the one exception: the rows both vocabularies (or
both position ranges) share are copied, the rest stay new. Nothing else is loaded partly: a
mismatch stops the run with the keys and shapes that differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import Config, load_config
from ..errors import ConfigError, DataError

CONFIG, WEIGHTS, TOKENIZER = "config.yaml", "model.safetensors", "tokenizer.json"


@dataclass
class InitReport:
    source: str
    loaded: list[str] = field(default_factory=list)  # tensors copied whole
    partial: dict[str, str] = field(default_factory=dict)  # embedding tables: which rows came over
    new: list[str] = field(default_factory=list)  # the run's tensors the directory has nothing for
    unused: list[str] = field(default_factory=list)  # the directory's tensors outside the loaded parts
    loaded_parameters: int = 0

    def as_dict(self) -> dict:
        return {"source": self.source, "loaded": len(self.loaded), "loaded_parameters": self.loaded_parameters,
                "partial": self.partial, "new": self.new, "unused": self.unused}

    def summary(self) -> str:
        prefixes = sorted({k.split(".")[0] for k in self.loaded})
        lines = [f"--init {self.source}: loaded {len(self.loaded)} tensors ({self.loaded_parameters:,} values) "
                 f"into {', '.join(prefixes) or 'nothing'}"]
        lines += [f"  partly: {key} ({how})" for key, how in self.partial.items()]
        if self.new:
            lines.append(f"  not from --init (as the config builds them): {_group(self.new)}")
        if self.unused:
            lines.append(f"  not used: {_group(self.unused)}")
        return "\n".join(lines)


def _group(keys: list[str]) -> str:
    """'head.mlp.0.weight', 'head.mlp.0.bias' -> 'head.* (2 tensors)', per top-level part."""
    counts: dict[str, int] = {}
    for key in keys:
        counts[key.split(".")[0]] = counts.get(key.split(".")[0], 0) + 1
    return ", ".join(f"{part}.* ({n} tensors)" for part, n in counts.items())


def check_init_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"--init {path}: no such model directory (train the model it names first)")
    for name in (CONFIG, WEIGHTS, TOKENIZER):
        if not (path / name).is_file():
            raise DataError(f"not a model directory to start from: {name} is missing", path=path)
    return path


# Settings that regularise training but build no weights: a run may set them apart from the source's.
TRAINING_ONLY = ("drop_tokens", "dropout")


def _architecture(config: Config, parts: list[str]) -> dict:
    m = config.model

    def built(part):  # a part's settings less those that build no weights (null: no part)
        return {k: v for k, v in part.items() if k not in TRAINING_ONLY} if isinstance(part, dict) else part

    return {"model.dim": m.dim, "data.image_size": config.data.image_size,
            **{f"model.{part}": built(getattr(m, part)) for part in parts}}


def check_architecture(source: Config, run: Config, path: Path) -> None:
    """Refuse a directory whose parts to load are configured differently from the run's."""
    parts = run.train.init_parts
    theirs, ours = _architecture(source, parts), _architecture(run, parts)
    differ = [f"{key}: {theirs[key]!r} there, {ours[key]!r} here" for key in ours if theirs[key] != ours[key]]
    if differ:
        raise ConfigError(f"--init {path}: its model has another architecture than this config's; set the same "
                          "encoders and fusion (the `model:` section of the pre-training config), load fewer parts "
                          "(train.init_parts), or start without --init. Differences: " + "; ".join(differ))


def extend_tokenizer(base, texts) -> object:
    """`base` (a word-level tokenizer) with every word of `texts` it lacks appended, so the words it
    knows keep their ids (their embedding rows carry over) and new words get fresh ones.
    Tokenizers of other kinds (a pretrained model's WordPiece) come back unchanged."""
    from tokenizers import Tokenizer

    from ..data.tokenizer import build_tokenizer

    spec = json.loads(base.to_str())
    if spec.get("model", {}).get("type") != "WordLevel":
        return base
    vocab = dict(spec["model"]["vocab"])
    found = build_tokenizer(texts).get_vocab()
    for word in sorted(found, key=found.get):  # the build's order: most frequent first
        if word not in vocab:
            vocab[word] = len(vocab)
    spec["model"]["vocab"] = vocab
    return Tokenizer.from_str(json.dumps(spec))


def init_tokenizer(path: str | Path, texts) -> object:
    """The tokenizer of model directory `path`, extended with the words of `texts` it lacks."""
    from ..data.tokenizer import load_tokenizer

    return extend_tokenizer(load_tokenizer(check_init_dir(path) / TOKENIZER), texts)


def check_vocabulary(source_tokenizer, run_tokenizer, path: Path) -> None:
    ours = run_tokenizer.get_vocab()
    for word, index in source_tokenizer.get_vocab().items():
        if ours.get(word) != index:
            raise ConfigError(f"--init {path}: its tokenizer gives {word!r} the id {index}, this run's gives "
                              f"{ours.get(word)}: the word embeddings would not carry over. Start from its "
                              f"tokenizer.json (task vqa does this for you)")


def load_init_weights(model: nn.Module, path: str | Path, config: Config, run_tokenizer) -> InitReport:
    """Copy the weights of the parts in config.train.init_parts from model directory `path` into `model`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..data.tokenizer import load_tokenizer

    path, parts = check_init_dir(path), config.train.init_parts
    if not parts:
        raise ConfigError(f"--init {path}: config key 'train.init_parts' is empty; name the parts to load "
                          "(image_encoder, text_encoder, fusion) or start without --init")
    check_architecture(load_config(path / CONFIG), config, path)
    if "text_encoder" in parts:  # word ids matter only to the text encoder's embeddings
        check_vocabulary(load_tokenizer(path / TOKENIZER), run_tokenizer, path)
    try:
        source = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise DataError(f"cannot read the weights ({exc})", path=path / WEIGHTS) from None
    report = InitReport(str(path))
    report.unused = sorted(k for k in source if k.split(".")[0] not in parts)
    embeddings = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Embedding)}
    state = model.state_dict()
    mismatched = []
    with torch.no_grad():
        for key, target in state.items():
            if key.split(".")[0] not in parts:
                report.new.append(key)
                continue
            if key not in source:
                mismatched.append(f"{key} is missing there")
                continue
            weights = source[key]
            if weights.shape == target.shape:
                target.copy_(weights)
                report.loaded.append(key)
                report.loaded_parameters += weights.numel()
            elif key in embeddings and weights.shape[1:] == target.shape[1:]:
                rows = min(len(weights), len(target))
                target[:rows].copy_(weights[:rows])
                report.partial[key] = f"rows 0-{rows - 1} of {len(target)} loaded, {len(weights)} there"
                report.loaded_parameters += weights[:rows].numel()
            else:
                mismatched.append(f"{key}: {tuple(weights.shape)} there, {tuple(target.shape)} here")
        extra = [k for k in source if k.split(".")[0] in parts and k not in state]
        mismatched += [f"{key} exists only there" for key in extra]
    if mismatched:
        shown = "; ".join(mismatched[:8]) + (f"; and {len(mismatched) - 8} more" if len(mismatched) > 8 else "")
        raise ConfigError(f"--init {path}: its weights do not fit this model: {shown}")
    return report


def init_from_dir(model: nn.Module, config: Config, model_dir: Path) -> dict:
    """`--init`: load config.train.init's encoders and fusion into `model` (the run's tokenizer is the one
    saved in `model_dir`); print and return what loaded. Every task's run calls it."""
    from ..data.tokenizer import load_tokenizer
    from .saved import TOKENIZER

    report = load_init_weights(model, config.train.init, config, load_tokenizer(model_dir / TOKENIZER))
    print(report.summary(), flush=True)
    return report.as_dict()
