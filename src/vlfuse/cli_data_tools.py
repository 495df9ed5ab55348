"""CLI commands for the data tools: `vlfuse cache build|info` and `vlfuse data shard`.

Kept apart from cli.py, which only registers them; heavy imports happen inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

cache_app = typer.Typer(help="Feature cache of frozen encoders (images; captions too): precompute, inspect.",
                        no_args_is_help=True)

SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: key.sub=value")]
SplitOption = Annotated[Optional[list[str]], typer.Option("--split", help="Split(s) to cache (default: every "
                                                                          "configured one).")]


@cache_app.command("build")
def cache_build(config: Path, split: SplitOption = None, set_: SetOption = None,
                chunk_size: int = typer.Option(64, help="Images per chunk file (the unit an interrupted build "
                                                        "resumes from).")) -> None:
    """Compute the frozen encoders' outputs for every image (and, with a frozen pretrained text encoder, every
    caption, question or text) of the config's splits into data.feature_cache.

    Items already cached are skipped (an interrupted build resumes); corrupt chunks are named and rebuilt.
    """
    from .config import load_config
    from .data.feature_cache import FeatureCache, ensure_features
    from .data.loading import SPLITS, read_split
    from .errors import ConfigError
    from .models.factory import IMAGE_ENCODERS, build_component

    cfg = load_config(config, set_ or [])
    if not cfg.data.feature_cache:
        raise ConfigError("config key 'data.feature_cache' is not set: give the cache folder, e.g. "
                          "--set data.feature_cache=cache/features")
    splits = split or [s for s in SPLITS if getattr(cfg.data, s) is not None]
    encoder = build_component(IMAGE_ENCODERS, cfg.model.image_encoder, "model.image_encoder", dim=cfg.model.dim,
                              image_size=cfg.data.image_size)
    cache = FeatureCache.for_encoder(cfg.data.feature_cache, encoder, cfg.data.image_size)
    for path in cache.drop_corrupt():
        typer.echo(f"rebuilding corrupt chunk {path}", err=True)
    reads = [read_split(cfg.data, name) for name in splits]
    paths = [s.image_path for read in reads for s in read.samples]
    cached = ensure_features(cache, encoder, paths, cfg.data.image_size, chunk_size=chunk_size)
    unique = len(set(cached.row_of.values()))
    typer.echo(f"{cache.folder}: {len(cached.row_of)} images of {', '.join(splits)} cached ({unique} distinct, "
               f"{cached.computed} computed now, the rest already there); features {list(cached.features.shape[1:])}")
    # The photos flipped left-right: training's (data.hflip), and every split's when retrieval ranks each
    # photo with its mirror (retrieval.flip_average: evaluation, and the query bank of training photos).
    flip_all = cfg.task == "retrieval" and cfg.retrieval.flip_average
    flipped_splits = [n for n in splits if flip_all or (cfg.data.hflip and n == "train")]
    if flipped_splits:
        paths = [s.image_path for name in flipped_splits for s in reads[splits.index(name)].samples]
        flipped = ensure_features(cache, encoder, paths, cfg.data.image_size, chunk_size=chunk_size, mirrored=True)
        typer.echo(f"{cache.folder}: {len(flipped.row_of)} images of {', '.join(flipped_splits)} cached flipped "
                   f"left-right ({flipped.computed} computed now)")
    for path, error in list(cached.errors.items())[:5]:
        typer.echo(f"not cached: {error}", err=True)
    if len(cached.errors) > 5:
        typer.echo(f"... and {len(cached.errors) - 5} more images not cached", err=True)
    texts = _encoded_texts(cfg, splits, reads)
    if texts is not None and cfg.data.cache_text:
        _build_text_cache(cfg, texts)


TEXT_NAMES = {"retrieval": "captions", "vqa": "questions", "matching": "statements", "classification": "texts"}


def _encoded_texts(cfg, splits: list[str], reads: list) -> list[str] | None:
    """What a run of the config's task feeds its text encoder, split by split; None for a task that
    reads no cached text states."""
    if cfg.task == "retrieval":
        return [c for read in reads for s in read.samples for c in s.captions]
    if cfg.task == "matching":  # statements made from captions or tables, as training makes them
        from .tasks.labelled.data import read_labelled

        return [s.question for name in splits for s in read_labelled(cfg, name).samples]
    if cfg.task in ("vqa", "classification"):
        return [s.question for read in reads for s in read.samples]
    return None


def _build_text_cache(cfg, texts: list[str]) -> None:
    """The frozen text encoder's states of `texts` into data.feature_cache (when it is frozen and pretrained)."""
    from .data.feature_cache import FeatureCache, ensure_text_features, text_cacheable
    from .data.tokenizer import encode_ids, load_tokenizer
    from .models.factory import TEXT_ENCODERS, build_component, text_tokenizer_file

    tokenizer_file = text_tokenizer_file(cfg)
    if tokenizer_file is None:
        typer.echo("text not cached: model.text_encoder is not a pretrained one (it learns its own vocabulary)")
        return
    tokenizer = load_tokenizer(tokenizer_file)
    encoder = build_component(TEXT_ENCODERS, cfg.model.text_encoder, "model.text_encoder", dim=cfg.model.dim,
                              vocab_size=tokenizer.get_vocab_size(), max_length=cfg.data.max_question_length)
    if not text_cacheable(encoder):
        typer.echo("text not cached: model.text_encoder trains whole (set freeze: true to cache it)")
        return
    cache = FeatureCache.for_text_encoder(cfg.data.feature_cache, encoder)
    for path in cache.drop_corrupt():
        typer.echo(f"rebuilding corrupt chunk {path}", err=True)
    ids = encode_ids(tokenizer, texts, cfg.data.max_question_length) if texts else []
    states, computed = ensure_text_features(cache, encoder, ids)
    typer.echo(f"{cache.folder}: {len(states)} {TEXT_NAMES[cfg.task]} cached ({computed} computed now, the rest "
               f"already there); states of width {encoder.hidden_size}")


@cache_app.command("info")
def cache_info_(directory: Path,
                verify: bool = typer.Option(False, "--verify", help="Check every chunk's sha256."),
                json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the encoders cached in DIR: images, chunks, size, feature shape (and, --verify, corrupt chunks)."""
    from .data.feature_cache import cache_info

    entries = cache_info(directory, verify)
    if json_:
        typer.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        typer.echo(f"{directory}: no cached encoders")
    for e in entries:
        what = (f"{e['images']} captions" if e["kind"] == "text"
                else f"at {e['image_size']} px, {e['images']} images")
        typer.echo(f"{e['folder']}: {e['encoder']} {what} in {e['chunks']} chunks, {e['bytes'] / 2**20:.1f} MiB, "
                   f"features {e.get('feature_shape')}, created {e['created']}")
        if verify:
            typer.echo("  all chunks verified" if not e["corrupt"] else f"  CORRUPT: {', '.join(e['corrupt'])}")


def data_shard(config: Path,
               split: str = typer.Option("train", help="Which split of the data config: train, val or test."),
               out: Path = typer.Option(..., help="Folder for the shards and shards.json."),
               max_samples_per_shard: int = typer.Option(1000, help="Images (samples) per tar shard."),
               prefix: Optional[str] = typer.Option(None, help="Shard name prefix (default: the split)."),
               set_: SetOption = None) -> None:
    """Write a configured split as WebDataset tar shards (PREFIX-000000.tar: KEY.jpg + KEY.json [+ KEY.txt])."""
    from .config import load_config
    from .data.loading import read_split
    from .data.shard_write import write_shards

    cfg = load_config(config, set_ or [])
    read = read_split(cfg.data, split)
    manifest = write_shards(read.samples, out, prefix=prefix or split, max_samples_per_shard=max_samples_per_shard,
                            skip_log=read.skipped, progress=True)
    typer.echo(f"Wrote {manifest['samples']} {manifest['kind']} samples in {len(manifest['shards'])} shards to {out}")
    if read.skipped.count:
        typer.echo(f"warning: {read.skipped.summary()}", err=True)


def data_coco_questions(
        annotations: Annotated[list[Path], typer.Argument(help="COCO instances JSON file(s), e.g. "
                                                               "annotations/instances_train2017.json.")],
        out: Path = typer.Option(..., help="Folder for <split>_questions.json and <split>_annotations.json."),
        seed: int = typer.Option(0, help="Seed of the absent categories that 'is there' questions ask about.")
) -> None:
    """Make VQA v2 questions (counts, 'is there', largest object, which animal/vehicle/...) from COCO instances."""
    from .data.coco_questions import generate

    for path in annotations:
        summary = generate(path, out, seed=seed)
        types = ", ".join(f"{n} {t}" for t, n in summary["question_types"].items())
        typer.echo(f"{summary['split']}: {summary['questions']} questions about {summary['images']} images "
                   f"({types}; {summary['answers']} distinct answers) -> {out}")
