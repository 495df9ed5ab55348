"""`vlfuse index build | add | search`: the retrieval index from the command line (see vlfuse.index).

Heavy imports (torch, FAISS) happen inside the commands, so `vlfuse --help` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

index_app = typer.Typer(help="Retrieval index: embed images with a retrieval model into FAISS, search it.",
                        no_args_is_help=True)

KIND_HELP = "flat (exact), ivf (inverted lists) or hnsw (graph)."


def _settings(kind: str, nlist: Optional[int], nprobe: Optional[int], m: int, ef_search: int):
    from .index import IndexSettings

    return IndexSettings(kind=kind, nlist=nlist, nprobe=nprobe, m=m, ef_search=ef_search)


def _report(index, what: str, out: Path) -> None:
    typer.echo(f"{what}: {len(index)} images in {out} ({index.settings.kind}, {index.dim}-d)")
    if index.skipped.count:
        typer.echo(index.skipped.summary(), err=True)


@index_app.command("build")
def build(
    model_dir: Path,
    out: Path = typer.Option(..., help="Folder to write the index to."),
    images: Optional[Path] = typer.Option(None, help="A folder of images (sub-folders included)."),
    data: Optional[Path] = typer.Option(None, help="A YAML config whose data section lists the images."),
    split: str = typer.Option("train", help="With --data: which split (train, val or test)."),
    kind: str = typer.Option("flat", help=KIND_HELP),
    nlist: Optional[int] = typer.Option(None, help="ivf: number of cells (default ~4 sqrt(n))."),
    nprobe: Optional[int] = typer.Option(None, help="ivf: cells searched per query (default sqrt(nlist))."),
    m: int = typer.Option(32, help="hnsw: links per node."),
    ef_search: int = typer.Option(64, help="hnsw: candidate list size when searching."),
) -> None:
    """Embed images with a retrieval model (task: retrieval) and save a FAISS index with their paths and ids."""
    from .index import build_index

    index = build_index(model_dir, images=images, data=data, split=split, out=out,
                        settings=_settings(kind, nlist, nprobe, m, ef_search), progress=True)
    _report(index, "Indexed", out)


@index_app.command("add")
def add(
    index_dir: Path,
    model_dir: Path,
    images: Optional[Path] = typer.Option(None, help="A folder of images to add."),
    data: Optional[Path] = typer.Option(None, help="A YAML config whose data section lists the images."),
    split: str = typer.Option("train", help="With --data: which split."),
) -> None:
    """Add images to an index, with the model that built it (images already in it are left out)."""
    from .index import add_to_index

    index, added = add_to_index(index_dir, model_dir, images=images, data=data, split=split, progress=True)
    _report(index, f"Added {added}", index_dir)


@index_app.command("search")
def search(
    index_dir: Path,
    model_dir: Path,
    text: Optional[str] = typer.Option(None, help="Text query: find the images it describes."),
    image: Optional[Path] = typer.Option(None, help="Image query: find the most similar images."),
    k: int = typer.Option(10, help="How many images to return."),
    rerank: bool = typer.Option(False, "--rerank", help="Re-score the top k with the model's matching (ITM) head "
                                                        "(text queries)."),
    json_: bool = typer.Option(False, "--json", help="Print the hits as JSON."),
) -> None:
    """Search an index by text (text -> image) or by image (image -> image)."""
    from .errors import ConfigError
    from .index import open_index

    if (text is None) == (image is None):
        raise ConfigError("give exactly one query: --text or --image")
    if image is not None and rerank:
        raise ConfigError("--rerank scores an image against a text: it applies to --text queries only")
    index = open_index(index_dir, model_dir)
    hits = index.search_texts([text], k, rerank)[0] if text is not None else index.search_images([image], k)[0]
    if json_:
        typer.echo(json.dumps([h.as_dict() for h in hits], indent=2, ensure_ascii=False))
        return
    for hit in hits:
        extra = "" if hit.match is None else f"  (similarity {hit.similarity:.3f}, match {hit.match:+.2f})"
        typer.echo(f"{hit.rank:3d}  {hit.score:7.3f}  {hit.id}  {hit.path}{extra}")
