"""`vlfuse serve`: the HTTP API and web page (vlfuse.serve) under uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def default_examples(config) -> Path | None:
    """The model's own test (else val) images, when they are where its config says."""
    for split in (config.data.test, config.data.val):
        if split is not None and split.images:
            folder = Path(config.data.root).expanduser() / split.images
            if folder.is_dir():
                return folder
    return None


def serve(
    model_dirs: list[Path] = typer.Argument(..., help="Model directories: one VQA, one captioning and one retrieval model at most."),
    index: Optional[Path] = typer.Option(None, help="An index built by `vlfuse index build` with the retrieval model."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 exposes the server to the network)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    max_batch: int = typer.Option(16, help="Micro-batching: most requests answered by one forward pass (1 = off)."),
    max_wait_ms: float = typer.Option(5.0, help="Micro-batching: how long a request waits for others to join it."),
    max_upload_mb: float = typer.Option(10.0, help="Largest request body accepted (larger: 413)."),
    max_megapixels: float = typer.Option(40.0, help="Largest image accepted, by its header (larger: 400)."),
    max_pending: int = typer.Option(128, help="Requests in progress at once; more are answered 503 + Retry-After."),
    timeout_s: float = typer.Option(60.0, help="Time budget of one request; past it, 503 and its queued work dropped."),
    allowed_host: list[str] = typer.Option([], help="A host name the server answers to besides localhost and IP "
                                                    "addresses (repeatable; '*': any); others get 400 (DNS "
                                                    "rebinding)."),
    cors_origin: list[str] = typer.Option([], help="A web page origin (https://app.example) allowed to call the "
                                                   "API from a browser (repeatable). None by default: CORS closed."),
    image_folder: list[Path] = typer.Option([], help="Folder /images/N may serve from (repeatable; default: the "
                                                     "folders the index was built from)."),
    examples: Optional[Path] = typer.Option(None, help="Folder of example images for the page (default: the VQA "
                                                       "model's test images, when present)."),
    log_level: str = typer.Option("info", help="uvicorn's log level."),
) -> None:
    """Serve models over HTTP: VQA answers and heatmaps, captions, image-text matching, search of an index; a web page at /."""
    from .errors import MissingDependencyError

    try:
        import uvicorn

        from .serve.app import create_app
    except ImportError:
        raise MissingDependencyError("vlfuse serve needs FastAPI and uvicorn: pip install 'vlfuse[serve]'") from None
    from .serve.guard import DEFAULT_HOSTS, is_address
    from .serve.service import ServeSettings, Service

    hosts = (*DEFAULT_HOSTS, *([] if is_address(host) else [host]), *allowed_host)
    settings = ServeSettings(max_batch=max_batch, max_wait_ms=max_wait_ms,
                             max_upload_bytes=int(max_upload_mb * 2**20), examples=examples,
                             max_pixels=int(max_megapixels * 1e6), max_pending=max_pending, timeout_s=timeout_s,
                             allowed_hosts=hosts, cors_origins=tuple(cors_origin), image_folders=tuple(image_folder))
    service = Service.load(model_dirs, index, settings)
    first = service.vqa or service.captioner
    if settings.examples is None and first is not None:
        settings.examples = default_examples(first.config)
    served = [t for t, part in (("vqa", service.vqa), ("captioning", service.captioner), ("retrieval", service.retrieval))
              if part is not None]
    typer.echo(f"Serving {' + '.join(served)}" + (f" with {len(service.index)} indexed images" if service.index else "")
               + f" on http://{host}:{port}/  (API: http://{host}:{port}/docs)")
    typer.echo(f"Answering to IP addresses and {', '.join(dict.fromkeys(hosts))} (more names: --allowed-host NAME)")
    uvicorn.run(create_app(service), host=host, port=port, log_level=log_level)
