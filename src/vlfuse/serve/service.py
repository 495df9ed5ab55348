"""What the server serves, without the HTTP: the loaded models, their batched work, their answers.

One server holds at most one model of each task it serves: a VQA model, a captioning model, a
retrieval model (+ optionally the index it built). Model work runs on one model thread: forward passes
never overlap (nor compete for the CPU's cores), and Grad-CAM's hooks never meet a concurrent forward
pass. Uploads are decoded on their own bounded lanes (vlfuse.serve.images) and leave them as model
inputs, so what waits in a queue is small whatever was uploaded.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.images import DEFAULT_MAX_PIXELS, image_to_tensor, load_image, load_image_bytes
from ..data.tokenizer import encode_ids, pad_ids
from ..errors import ConfigError, ImageError
from .batching import MicroBatcher
from .guard import DEFAULT_HOSTS
from .images import Decoder, fit_within
from .limits import NotFound, NotServed

SERVED_TASKS = ("vqa", "captioning", "retrieval")


@dataclass
class ServeSettings:
    max_batch: int = 16  # 1: no micro-batching
    max_wait_ms: float = 5.0
    max_upload_bytes: int = 10 * 2**20
    max_k: int = 100
    examples: Path | None = None  # a folder of example images for the page
    max_pixels: int = DEFAULT_MAX_PIXELS  # an upload with more pixels (by its header) is refused before decoding
    max_pending: int = 128  # requests in progress at once (reading, decoding, queued, running); more: 503
    timeout_s: float = 60.0  # a request not answered by then: 503, its queued work dropped
    decode_threads: int = 2  # the small-image decoding lane (large images have one thread of their own)
    allowed_hosts: tuple[str, ...] = DEFAULT_HOSTS  # Host names answered besides IP addresses ("*": any)
    cors_origins: tuple[str, ...] = ()  # pages of other origins allowed to call the API (CORS)
    image_folders: tuple[Path, ...] = ()  # /images serves files inside these (default: the index's folders)

    def __post_init__(self):
        at_least = {"max_batch": 1, "max_upload_bytes": 1, "max_k": 1, "max_pixels": 1, "max_pending": 1,
                    "decode_threads": 1}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ConfigError(f"serve setting {name} must be >= {low}, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.timeout_s <= 0:
            raise ConfigError(f"serve settings max_wait_ms must be >= 0 and timeout_s > 0, got {self.max_wait_ms} "
                              f"and {self.timeout_s}")


@dataclass
class Question:
    image: torch.Tensor  # uint8 [3, S, S]
    question: str
    top_k: int = 5


@dataclass
class CaptionRequest:
    image: torch.Tensor  # uint8 [3, S, S] at the captioning model's size


@dataclass
class TextQuery:
    text: str
    k: int = 10
    rerank: bool = False


@dataclass
class ImageQuery:
    image: torch.Tensor  # uint8 [3, S, S] at the retrieval model's size
    k: int = 10


@dataclass
class Service:
    vqa: object | None = None  # vlfuse.predict.Predictor
    retrieval: object | None = None  # vlfuse.index.RetrievalEncoder
    index: object | None = None  # vlfuse.index.ImageIndex, attached to `retrieval`
    captioner: object | None = None  # vlfuse.tasks.captioning.predict.Captioner
    settings: ServeSettings = field(default_factory=ServeSettings)
    model_dirs: dict[str, str] = field(default_factory=dict)  # task -> directory, for /health

    def __post_init__(self):
        if self.vqa is None and self.retrieval is None and self.captioner is None:
            raise ConfigError("serve needs a model: a VQA, captioning or retrieval model directory")
        if self.index is not None and self.retrieval is None:
            raise ConfigError("an index is searched with the retrieval model that built it: give that model too")
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlfuse-model")
        s = self.settings
        self.decoder = Decoder(s.decode_threads)
        folders = s.image_folders or (self.index.image_folders() if self.index is not None else ())
        self.image_folders = tuple(Path(f).resolve() for f in folders)
        self.checked_images: dict[int, str] = {}  # position -> media type, once it decoded
        self.answer_batcher = MicroBatcher(self.answer_batch, self.executor, s.max_batch, s.max_wait_ms)
        self.text_batcher = MicroBatcher(self.search_text_batch, self.executor, s.max_batch, s.max_wait_ms)
        self.image_batcher = MicroBatcher(self.search_image_batch, self.executor, s.max_batch, s.max_wait_ms)
        self.caption_batcher = MicroBatcher(self.caption_batch, self.executor, s.max_batch, s.max_wait_ms)
        self.batchers = (self.answer_batcher, self.text_batcher, self.image_batcher, self.caption_batcher)

    @classmethod
    def load(cls, model_dirs: list[Path], index_dir: Path | None = None,
             settings: ServeSettings | None = None) -> "Service":
        """Models by their config's task (one per task); the index checked against the retrieval model."""
        from ..index import open_index
        from ..predict import load, load_encoder
        from ..tasks import saved_task

        found: dict[str, Path] = {}
        for model_dir in model_dirs:
            task = saved_task(model_dir)
            if task not in SERVED_TASKS:
                raise ConfigError(f"{model_dir}: serve answers with {', '.join(SERVED_TASKS)} models; this one is "
                                  f"task {task}")
            if task in found:
                raise ConfigError(f"two {task} models given ({found[task]} and {model_dir}): serve takes one model "
                                  "of each task at most")
            found[task] = Path(model_dir)
        vqa = load(found["vqa"]) if "vqa" in found else None
        retrieval = load_encoder(found["retrieval"]) if "retrieval" in found else None
        if index_dir is not None and retrieval is None:
            raise ConfigError("--index needs the retrieval model that built it among the MODEL_DIRs")
        index = open_index(index_dir, retrieval) if index_dir is not None else None
        captioner = None
        if "captioning" in found:
            from ..tasks.captioning.predict import load_captioner

            captioner = load_captioner(found["captioning"])
        return cls(vqa, retrieval, index, captioner, settings or ServeSettings(), {t: str(d) for t, d in found.items()})

    # ------------------------------------------------------------------ what is served

    def need(self, what: str):
        if what == "vqa" and self.vqa is None:
            raise NotServed("this server has no VQA model: start it with one (vlfuse serve VQA_MODEL_DIR ...)")
        if what == "captioning" and self.captioner is None:
            raise NotServed("this server has no captioning model: start it with one (vlfuse serve "
                            "CAPTIONING_MODEL_DIR ...)")
        if what in ("retrieval", "index") and self.retrieval is None:
            raise NotServed("this server has no retrieval model: start it with one (vlfuse serve "
                            "RETRIEVAL_MODEL_DIR --index INDEX_DIR ...)")
        if what == "index" and self.index is None:
            raise NotServed("this server has no image index to search: start it with --index INDEX_DIR "
                            "(built by vlfuse index build)")
        return {"vqa": self.vqa, "retrieval": self.retrieval, "index": self.index, "captioning": self.captioner}[what]

    def health(self) -> dict:
        def describe(part, task) -> dict | None:
            if part is None:
                return None
            m = part.config.model
            return {"model_dir": self.model_dirs.get(task), "image_encoder": m.image_encoder.get("name"),
                    "text_encoder": m.text_encoder.get("name"),
                    "fusion": None if m.fusion is None else m.fusion.get("name")}

        vqa = describe(self.vqa, "vqa")
        if vqa is not None:
            vqa["answers"] = len(self.vqa.answers)
        retrieval = describe(self.retrieval, "retrieval")
        if retrieval is not None:
            retrieval["can_rerank"] = self.retrieval.can_rerank
        captioning = None if self.captioner is None else {
            "model_dir": self.model_dirs.get("captioning"),
            "image_encoder": self.captioner.config.model.image_encoder.get("name"),
            "decoder": (getattr(self.captioner.config.model, "decoder", None) or {}).get("name")}
        index = None if self.index is None else {"images": len(self.index), "kind": self.index.settings.kind,
                                                  "dim": self.index.dim}
        return {"status": "ok", "vqa": vqa, "captioning": captioning, "retrieval": retrieval, "index": index,
                "batching": {"max_batch": self.settings.max_batch, "max_wait_ms": self.settings.max_wait_ms,
                             **{name: {"batches": len(batcher.batch_sizes), "requests": sum(batcher.batch_sizes)}
                                for name, batcher in zip(("answer", "search_text", "search_image", "caption"),
                                                         self.batchers)}},
                "max_upload_bytes": self.settings.max_upload_bytes}

    # ------------------------------------------------------------------ inputs (on the decoding lanes)

    def decode(self, data: bytes):
        return load_image_bytes(data, name="image", max_bytes=self.settings.max_upload_bytes,
                                max_pixels=self.settings.max_pixels)

    async def model_input(self, data: bytes, task: str) -> torch.Tensor:
        """An upload decoded and resized at once to the input of `task`'s model: uint8 [3, S, S]."""
        size = self.need(task).config.data.image_size
        return await self.decoder.run(data, lambda d: image_to_tensor(self.decode(d), size))

    async def explain_input(self, data: bytes):
        """The VQA model's input and a copy of the picture small enough to paint heatmaps on."""
        size = self.need("vqa").config.data.image_size

        def make(d: bytes):
            picture = self.decode(d)
            return image_to_tensor(picture, size), fit_within(picture)

        return await self.decoder.run(data, make)

    def indexed_image(self, position: int) -> tuple[Path, str]:
        """The file of an indexed image and its media type, if it lies inside a folder the index was built
        from and decodes as an image (an edited items.jsonl cannot make the server read anything else)."""
        from PIL import Image

        index = self.need("index")
        if not 0 <= position < len(index):
            raise NotFound(f"no image {position} in the index (it holds {len(index)})")
        path = Path(index.items[position].path).resolve()
        if not any(path.is_relative_to(folder) for folder in self.image_folders):
            raise NotFound(f"indexed image {position} is not served: it lies outside the folders the index was "
                           "built from")
        if not path.is_file():
            raise NotFound(f"indexed image {position} is no longer on disk")
        if position not in self.checked_images:
            try:
                load_image(path, max_pixels=self.settings.max_pixels)
                with Image.open(path) as image:
                    self.checked_images[position] = Image.MIME.get(image.format, "application/octet-stream")
            except (ImageError, OSError) as exc:
                raise NotFound(f"indexed image {position} is not served: {getattr(exc, 'reason', exc)}") from None
        return path, self.checked_images[position]

    def check_k(self, k: int, name: str = "k") -> int:
        if not 1 <= k <= self.settings.max_k:
            raise ConfigError(f"{name} must be between 1 and {self.settings.max_k}, got {k}")
        return k

    # ------------------------------------------------------------------ batched work (on the model thread)

    @torch.no_grad()
    def answer_batch(self, questions: list[Question]) -> list[dict]:
        """Several (image, question) requests in one forward pass: each row its own image and question."""
        predictor = self.vqa
        ids, mask = pad_ids(encode_ids(predictor.tokenizer, [q.question for q in questions],
                                       predictor.config.data.max_question_length))
        images = torch.stack([q.image for q in questions])
        probs = predictor.logits(images, ids, mask).softmax(-1)  # PyTorch, or onnxruntime for an exported model
        out = []
        for q, row in zip(questions, probs):
            values, indices = row.topk(min(q.top_k, len(row)))
            top = [{"answer": predictor.answers[i], "probability": p} for i, p in zip(indices.tolist(), values.tolist())]
            out.append({"question": q.question, "answer": top[0]["answer"], "confidence": top[0]["probability"],
                        "top": top})
        return out

    def caption_batch(self, requests: list[CaptionRequest]) -> list[dict]:
        """Several images captioned by one decoding pass (the model's own beam size and length penalty)."""
        from ..tasks.captioning.predict import caption_images

        images = torch.stack([r.image for r in requests])
        return [{"caption": caption, "log_prob": float(score)}
                for caption, score in caption_images(self.captioner.saved, images, batch=len(requests))]

    def search_text_batch(self, queries: list[TextQuery]) -> list[list[dict]]:
        index = self.index
        vectors = self.retrieval.embed_texts([q.text for q in queries])
        hits = index.search_vectors(vectors, max(q.k for q in queries), "text")
        return [[h.as_dict() for h in (index.rerank(q.text, row[: q.k]) if q.rerank else row[: q.k])]
                for q, row in zip(queries, hits)]

    def search_image_batch(self, queries: list[ImageQuery]) -> list[list[dict]]:
        vectors = self.retrieval.embed_image_tensors(torch.stack([q.image for q in queries]))
        hits = self.index.search_vectors(vectors, max(q.k for q in queries), "image")
        return [[h.as_dict() for h in row[: q.k]] for q, row in zip(queries, hits)]

    # ------------------------------------------------------------------ unbatched work (on the model thread)

    def match(self, image: torch.Tensor, text: str) -> dict:
        """One image and one text: cosine similarity and the re-ranking score when the model has one; with an
        ITM head that score is the log-odds of a match, also given as the probability they match."""
        encoder = self.retrieval
        if not encoder.can_rerank:
            image_emb = encoder.embed_image_tensors(image.unsqueeze(0))
            return {"similarity": float(image_emb[0] @ encoder.embed_texts([text])[0]), "rerank_score": None,
                    "match_log_odds": None, "match_probability": None}
        similarity, score = encoder.match(image.unsqueeze(0), text)
        score = float(score[0])
        log_odds = score if encoder.config.retrieval.reranker == "itm" else None
        return {"similarity": float(similarity[0]), "rerank_score": score, "match_log_odds": log_odds,
                "match_probability": None if log_odds is None else float(1 / (1 + np.exp(-log_odds)))}

    def explain(self, image: torch.Tensor, shown, question: str, method: str) -> dict:
        """image: the model's input; shown: the (small) picture the heatmap is painted on."""
        from ..explain.api import explain_input
        from .heatmap import heatmap_png_base64

        result = explain_input(self.vqa, image, shown, question, method=method)
        return {"question": result.question, "answer": result.answer, "confidence": result.confidence,
                "method": result.method, "tokens": result.tokens,
                "heatmap_png": heatmap_png_base64(result.image, result.heatmap)}

    async def start(self) -> None:
        for batcher in self.batchers:
            await batcher.start()

    async def stop(self) -> None:
        for batcher in self.batchers:
            await batcher.stop()
