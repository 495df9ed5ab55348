"""The HTTP API (FastAPI) and the web page; `vlfuse serve` runs it with uvicorn.

    POST /answer        image + question -> answer, confidence, top-k          (VQA model)
    POST /explain       image + question -> answer + heatmap PNG (base64)      (VQA model)
    POST /caption       image -> caption                                       (captioning model)
    POST /match         image + text -> similarity, probability they match     (retrieval model)
    POST /search        {"text", "k", "rerank"} -> ranked indexed images       (retrieval model + index)
    POST /search/image  image (+ k) -> the most similar indexed images         (retrieval model + index)
    GET  /images/{n}    the n-th indexed image;  GET /examples, /examples/{n}: the page's example images
    GET  /health, /openapi.json, /docs;  GET / : the web page

Uploads are decoded by vlfuse.data.images (format sniffed from the bytes, never the file name or the
declared type; size and pixel count bounded) and cut down to the model's input at once (serve.images).
Every error is JSON: {"error": message, "kind": type}. Around the routes, outermost first: the Host and
Origin checks (serve.guard), CORS when enabled, the cap on requests in progress and their time budget,
and the upload size limit (serve.limits).
"""

from __future__ import annotations

import asyncio
import mimetypes
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data.formats.common import check_question
from ..data.formats.fields import IMAGE_SUFFIXES
from ..errors import VLFuseError
from ..explain.api import METHODS, check_method
from ..index.encoder import check_text
from ..models.retrieval import CANNOT_RERANK
from .guard import RequestGuard
from .limits import BodyLimit, InProgress, NotServed, WorkLimit, error_body, status_of
from .service import CaptionRequest, ImageQuery, Question, ServeSettings, Service, TextQuery

MAX_EXAMPLES = 24


class SearchRequest(BaseModel):
    text: str = Field(description="What to find: a description of the images.")
    k: int = Field(10, description="How many images to return.")
    rerank: bool = Field(False, description="Re-score the top k with the model's re-ranker (its matching head or "
                                            "token-wise late interaction: retrieval.reranker).")


def _examples(service: Service) -> list[Path]:
    folder = service.settings.examples
    if folder is None:
        return []
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:MAX_EXAMPLES]


def _image_file(path: Path, media_type: str | None = None) -> FileResponse:
    media_type = media_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"X-Content-Type-Options": "nosniff"})


def create_app(service: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="vlfuse", version="0.1", lifespan=lifespan,
                  description="Visual question answering, explanations and image retrieval with vlfuse models.")
    app.state.service = service
    in_progress = InProgress(service.settings.max_pending)
    _add_error_handlers(app)
    _add_page_and_status(app, service, in_progress)
    _add_vqa_routes(app, service)
    _add_caption_routes(app, service)
    _add_retrieval_routes(app, service)
    _add_middleware(app, service.settings, in_progress)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON: its message and its kind."""

    @app.exception_handler(VLFuseError)
    async def vlfuse_error(request: Request, exc: VLFuseError):
        return JSONResponse(error_body(str(exc), type(exc).__name__), status_code=status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
                             for e in exc.errors())
        return JSONResponse(error_body(problems or "invalid request", "InvalidRequest"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body(str(exc.detail), "HTTPError"), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", "InternalError"),
                            status_code=500)


def _add_page_and_status(app: FastAPI, service: Service, in_progress: InProgress) -> None:
    """The page, /health, the example images and the indexed images."""
    examples = _examples(service)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8"))

    @app.get("/health", summary="What this server serves")
    async def health():
        return {**service.health(), "examples": len(examples),
                "in_progress": {"requests": in_progress.count, "limit": in_progress.limit}}

    @app.get("/examples", summary="Example images for the page")
    async def list_examples():
        return [{"name": p.name, "url": f"/examples/{n}"} for n, p in enumerate(examples)]

    @app.get("/examples/{number}", summary="One example image")
    async def example(number: int):
        if not 0 <= number < len(examples):
            raise StarletteHTTPException(404, f"no example {number} (there are {len(examples)})")
        return _image_file(examples[number])

    @app.get("/images/{position}", summary="One indexed image (a search hit's position)")
    async def indexed_image(position: int):
        service.need("index")  # checked (decoded) on the large lane: a file can be as big as an upload
        return _image_file(*await service.decoder.run_large(service.indexed_image, position))


def _add_vqa_routes(app: FastAPI, service: Service) -> None:
    """/answer and /explain."""

    @app.post("/answer", summary="Answer a question about an uploaded image")
    async def answer(image: Annotated[UploadFile, File(description="The image (JPEG, PNG, WebP, GIF, BMP).")],
                     question: Annotated[str, Form()] = "", top_k: Annotated[int, Form()] = 5):
        service.need("vqa")
        question = check_question(question)
        service.check_k(top_k, "top_k")
        picture = await service.model_input(await image.read(), "vqa")
        return await service.answer_batcher.submit(Question(picture, question, top_k))

    @app.post("/explain", summary="Answer and show where in the image the answer came from")
    async def explain(image: Annotated[UploadFile, File()], question: Annotated[str, Form()] = "",
                      method: Annotated[str, Form(description=", ".join(METHODS))] = "attention"):
        service.need("vqa")
        question = check_question(question)
        check_method(method)
        picture, shown = await service.explain_input(await image.read())
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(service.executor, service.explain, picture, shown, question, method)


def _add_caption_routes(app: FastAPI, service: Service) -> None:
    """/caption."""

    @app.post("/caption", summary="Describe an uploaded image")
    async def caption(image: Annotated[UploadFile, File()]):
        service.need("captioning")
        picture = await service.model_input(await image.read(), "captioning")
        return await service.caption_batcher.submit(CaptionRequest(picture))


def _add_retrieval_routes(app: FastAPI, service: Service) -> None:
    """/match, /search and /search/image."""

    @app.post("/match", summary="How well a text describes an uploaded image")
    async def match(image: Annotated[UploadFile, File()], text: Annotated[str, Form()] = ""):
        service.need("retrieval")
        text = check_text(text)
        picture = await service.model_input(await image.read(), "retrieval")
        loop = asyncio.get_running_loop()
        return {"text": text, **await loop.run_in_executor(service.executor, service.match, picture, text)}

    def _with_urls(hits: list[dict]) -> list[dict]:
        # the image's URL on this server instead of its path on the server's disk
        return [{**{k: v for k, v in hit.items() if k != "path"}, "url": f"/images/{hit['position']}"} for hit in hits]

    @app.post("/search", summary="Text -> image: the indexed images a text describes best")
    async def search(request: SearchRequest):
        service.need("index")
        text = check_text(request.text)
        service.check_k(request.k)
        if request.rerank and not service.retrieval.can_rerank:
            raise NotServed(f"{CANNOT_RERANK}: search without rerank")
        hits = await service.text_batcher.submit(TextQuery(text, request.k, request.rerank))
        return {"query": text, "rerank": request.rerank, "results": _with_urls(hits)}

    @app.post("/search/image", summary="Image -> image: the indexed images most like an uploaded one")
    async def search_image(image: Annotated[UploadFile, File()], k: Annotated[int, Form()] = 10):
        service.need("index")
        service.check_k(k)
        picture = await service.model_input(await image.read(), "retrieval")
        hits = await service.image_batcher.submit(ImageQuery(picture, k))
        return {"results": _with_urls(hits)}


def _add_middleware(app: FastAPI, settings: ServeSettings, in_progress: InProgress) -> None:
    """Around the routes and their body parsing (the last added runs first): an oversized upload is
    never read whole, and a refused request (busy, wrong Host, foreign Origin) is not read at all."""
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(WorkLimit, in_progress=in_progress, timeout_s=settings.timeout_s)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"])
    app.add_middleware(RequestGuard, allowed_hosts=settings.allowed_hosts, cors_origins=settings.cors_origins)
