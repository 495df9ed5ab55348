"""Task pretrain (`vlfuse pretrain CONFIG`): image-caption pre-training of a VQA model's encoders + fusion.

The data is a caption format (COCO captions: the built-in `data/shapes/captions`, COCO-mini); each
batch pairs B images with one caption each, and every enabled objective of `pretrain.objectives`
runs on it (see vlfuse.models.pretrain). The run directory is an ordinary one (checkpoints,
`--resume`, logs/metrics.csv); OUT_DIR/model is the directory to fine-tune from:

  config.yaml, tokenizer.json        the word tokenizer (captions + `pretrain.vocabulary_data` texts, plus
                                     [MASK]) that fine-tuning reuses
  model.safetensors                  image_encoder.*, text_encoder.*, fusion.*: what `--init` loads
  pretrain_heads.safetensors         the objectives' heads (for `vlfuse eval` of the pre-training losses)
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from ..config import Config, TrainConfig
from ..data.caption_dataset import CaptionDataset, PairSampler, collate_pairs
from ..data.loading import read_split
from ..data.tokenizer import build_tokenizer, load_tokenizer
from ..errors import ConfigError, DataError
from ..losses.adversarial import dann_lambda
from ..models.pretrain import PretrainModel, build_pretrain_model, objective_weights
from ..models.saved import CONFIG, TOKENIZER, WEIGHTS, save_vocabularies
from ..progress import track
from .module import configure_adamw
from .run import EpochDataModule, Prepared, steps_per_epoch, warn_skipped

HEADS = "pretrain_heads.safetensors"


class PretrainModule(L.LightningModule):
    def __init__(self, model: PretrainModel, train_config: TrainConfig, total_steps: int, seed: int = 0):
        super().__init__()
        self.model, self.cfg, self.total_steps, self.seed = model, train_config, max(1, total_steps), seed

    def _generator(self, step: int) -> torch.Generator:
        # Masks and negatives drawn from (seed, step) alone: a resumed run draws what the interrupted one would have.
        return torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + step)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "adversarial" in self.model.heads:  # DANN schedule: the reversed gradient grows with progress
            self.model.heads["adversarial"].reverse.lambd = dann_lambda(self.global_step / self.total_steps)
        out = self.model.losses(batch, self._generator(self.global_step))
        n = len(batch["input_ids"])
        for name, value in out.items():
            self.log(f"train_{name}", value, prog_bar=name in ("loss", "itc_acc", "itm_acc", "mlm_acc"), batch_size=n)
        return out["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.model.losses(batch, self._generator(batch_idx))
        n = len(batch["input_ids"])
        for name, value in out.items():
            self.log(f"val_{name}", value, prog_bar=name == "loss", batch_size=n, sync_dist=True)

    def configure_optimizers(self):
        return configure_adamw(self.model, self.cfg, self.total_steps)


def vocabulary_texts(config: Config) -> list[str]:
    """Texts of `pretrain.vocabulary_data`'s train split: questions (or captions) fine-tuning will read."""
    data = config.pretrain.vocabulary_data
    if data is None:
        return []
    read = read_split(data, "train")
    texts = []
    for sample in read.samples:
        texts += list(getattr(sample, "captions", ())) or [sample.question]
    return texts


def pretrain_tokenizer(config: Config, captions: list[str], model_dir: Path, resume: bool):
    from ..models.factory import text_tokenizer_file

    if resume:  # a resumed run must keep the exact token ids of the interrupted one
        return load_tokenizer(model_dir / TOKENIZER)
    pretrained = text_tokenizer_file(config)
    if pretrained:
        return load_tokenizer(pretrained)
    return build_tokenizer(captions + vocabulary_texts(config), specials=("[MASK]",))


def _check(config: Config) -> None:
    if config.model.fusion is None:
        raise ConfigError("config key 'model.fusion' is required for task pretrain: the fusion is what ITM, MLM "
                          "and MRM train")
    weights = objective_weights(config.pretrain)
    if (weights["itc"] or weights["itm"]) and config.train.batch_images < 2:
        raise ConfigError("config key 'train.batch_images' must be >= 2 for task pretrain with itc or itm: the "
                          "other images of a batch are each pair's negatives")


def prepare_pretrain(config: Config, model_dir: Path, resume: bool, progress: bool) -> Prepared:
    """Task pretrain: captioned images, one caption per image in each batch, every objective on each batch."""
    _check(config)
    train_read = read_split(config.data, "train")
    val_read = read_split(config.data, "val") if config.data.val else None
    captions = [c for s in train_read.samples for c in s.captions]
    tokenizer = pretrain_tokenizer(config, captions, model_dir, resume)
    save_vocabularies(model_dir, config, tokenizer, None)
    args = (tokenizer, config.data.image_size, config.data.max_question_length)
    train_set = CaptionDataset(train_read.samples, *args, train_read.skipped, progress, "Loading train images")
    if len(train_set) < 2:
        raise ConfigError(f"task pretrain needs at least 2 captioned training images, found {len(train_set)}"
                          + (f"; {train_read.skipped.summary()}" if train_read.skipped.count else ""))
    val_set = CaptionDataset(val_read.samples, *args, val_read.skipped, progress, "Loading val images") \
        if val_read else None
    warn_skipped(train=train_read, val=val_read)

    model = build_pretrain_model(config, tokenizer)
    module = PretrainModule(model, config.train, steps_per_epoch(config, len(train_set)) * config.train.epochs,
                            config.seed)
    summary = {
        "task": "pretrain",
        "objectives": model.weights,
        "train": {"images": len(train_set), "captions": len(train_set.captions),
                  "skipped": train_read.skipped.as_dict()},
        "val": None if val_set is None else {"images": len(val_set), "captions": len(val_set.captions)},
        "vocab": tokenizer.get_vocab_size(),
        "parameters": {"backbone": sum(p.numel() for p in model.backbone().parameters()),
                       "heads": sum(p.numel() for p in model.heads.parameters())},
    }
    datamodule = EpochDataModule(train_set, val_set, config, collate_pairs, PairSampler)
    return Prepared(module, datamodule, lambda: save_pretrained_dir(model_dir, model.cpu(), config, tokenizer), summary)


def save_pretrained_dir(path: Path, model: PretrainModel, config: Config, tokenizer) -> Path:
    from safetensors.torch import save_model

    path = save_vocabularies(path, config, tokenizer, None)
    save_model(model.backbone(), str(path / WEIGHTS))
    save_model(model.heads, str(path / HEADS))
    return path


def load_pretrained_dir(path: str | Path) -> tuple[PretrainModel, Config, object]:
    """(model with its heads, config, tokenizer) of a directory `vlfuse pretrain` wrote."""
    from safetensors.torch import load_model

    from ..config import load_config

    path = Path(path)
    for name in (CONFIG, TOKENIZER, WEIGHTS, HEADS):
        if not (path / name).is_file():
            raise DataError(f"not a pre-trained model directory: {name} is missing", path=path)
    config = load_config(path / CONFIG)
    if config.task != "pretrain":
        raise DataError(f"holds a {config.task} model, not a pretrain one", path=path)
    tokenizer = load_tokenizer(path / TOKENIZER)
    model = build_pretrain_model(config, tokenizer)
    for part, name in ((model.backbone(), WEIGHTS), (model.heads, HEADS)):
        try:
            load_model(part, str(path / name))
        except Exception as exc:  # wrong shapes or a damaged file: say which file
            raise DataError(f"weights do not fit the config ({exc})", path=path / name) from None
    return model.eval(), config, tokenizer


@torch.no_grad()
def evaluate_pretrain(model: PretrainModel, dataset: CaptionDataset, batch: int = 64, seed: int = 0,
                      progress: bool = True) -> dict:
    """Each objective's loss and accuracy averaged over `dataset` (pairs in order, fixed masks)."""
    model.eval()
    device = next(model.parameters()).device
    totals: dict[str, float] = {}
    count = 0
    starts = range(0, len(dataset), batch)
    for k, start in enumerate(track(starts, "Evaluating objectives", total=len(starts), enabled=progress)):
        items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        if len(items) < 2:  # a last batch of one has no negatives
            continue
        pairs = collate_pairs(items)
        pairs = {key: value.to(device) for key, value in pairs.items()}
        out = model.losses(pairs, torch.Generator(device=device).manual_seed(seed * 1_000_003 + k))
        for name, value in out.items():
            totals[name] = totals.get(name, 0.0) + float(value) * len(items)
        count += len(items)
    return {name: total / max(1, count) for name, total in totals.items()}


def evaluate_pretrain_split(model_dir: Path, config: Config, split: str, out_json: Path | None,
                            progress: bool = True) -> dict:
    """Pre-training losses and accuracies of the model in `model_dir` on one split of `config.data`."""
    model, saved_config, tokenizer = load_pretrained_dir(model_dir)
    read = read_split(config.data, split)
    data = saved_config.data
    dataset = CaptionDataset(read.samples, tokenizer, data.image_size, data.max_question_length, read.skipped,
                             progress)
    if len(dataset) < 2:
        raise DataError(f"need at least 2 captioned images to evaluate pre-training, found {len(dataset)}")
    metrics = {"task": "pretrain", "split": split, "images": len(dataset),
               **evaluate_pretrain(model, dataset, config.train.batch_images, config.seed, progress),
               "skipped": read.skipped.as_dict()}
    if out_json is not None:
        out_json.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics



def init_from_dir(model, config: Config, model_dir: Path) -> dict:
    """`--init`: load config.train.init's encoders and fusion into `model`; print and return what loaded."""
    from ..models.init_weights import load_init_weights

    report = load_init_weights(model, config.train.init, config, load_tokenizer(model_dir / TOKENIZER))
    print(report.summary(), flush=True)
    return report.as_dict()
