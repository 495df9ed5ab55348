"""An exported folder as the PyTorch model's Python face, answered by onnxruntime: a Predictor
(predict / predict_many / logits) or, for a retrieval model, a RetrievalEncoder (embeddings, match)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..config import load_config
from ..data.answers import AnswerVocab
from ..data.tokenizer import load_tokenizer
from ..errors import ConfigError, DataError
from ..index.encoder import RetrievalEncoder
from ..models.retrieval import CANNOT_RERANK
from ..models.saved import ANSWERS, CONFIG, TOKENIZER, SavedModel
from ..tasks.vqa.predict import Predictor
from .info import EXPORT_INFO
from .graphs import graph_inputs


def read_export_info(path: Path) -> dict:
    try:
        info = json.loads((path / EXPORT_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable ({exc})", path=path / EXPORT_INFO) from None
    if not isinstance(info, dict) or info.get("format") != "onnx" or not isinstance(info.get("graphs"), dict):
        raise DataError("not an ONNX export's description (format: onnx and graphs expected)", path=path / EXPORT_INFO)
    return info


class Graphs:
    """The onnxruntime sessions of an exported folder, on as many threads as torch would use
    (torch.get_num_threads(): OMP_NUM_THREADS bounds both alike)."""

    def __init__(self, folder: Path):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("running an exported model needs onnxruntime: pip install 'vlfuse[export]'") from None
        self.info = read_export_info(folder)
        needed = [CONFIG, TOKENIZER, *self.info["graphs"], *([ANSWERS] if self.info.get("task") != "retrieval" else [])]
        for name in needed:
            if not (folder / name).is_file():
                raise DataError(f"not a complete exported model: {name} is missing", path=folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        self.sessions = {name: ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])
                         for name in self.info["graphs"]}

    def run(self, name: str, **tensors: torch.Tensor) -> list[np.ndarray]:
        feeds = graph_inputs(self.info["graphs"][name], self.info.get("region_proposal"), **tensors)
        return self.sessions[name].run(None, feeds)


class ExportedPredictor(Predictor):
    """A Predictor whose logits come from model.onnx."""

    def __init__(self, folder: Path):
        self.folder, self.graphs = folder, Graphs(folder)
        self.info = self.graphs.info
        self.config, self.tokenizer = load_config(folder / CONFIG), load_tokenizer(folder / TOKENIZER)
        self.answers = AnswerVocab.load(folder / ANSWERS)
        self.saved = SavedModel(None, self.config, self.tokenizer, self.answers)
        self.model = None  # no PyTorch model: explanations and fine-tuning need the original
        self._warned_no_scene = False

    def logits(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               image_index: torch.Tensor | None = None, graph=None) -> torch.Tensor:
        if graph is not None:
            raise ConfigError("an exported model reads no scene graphs")
        if image_index is None:
            image_index = torch.arange(len(input_ids))
        (logits,) = self.graphs.run("model.onnx", images=images, input_ids=input_ids, attention_mask=attention_mask,
                                    image_index=image_index)
        return torch.from_numpy(logits).float()


class ExportedRetrievalEncoder(RetrievalEncoder):
    """A RetrievalEncoder whose embeddings (and re-ranking scores) come from image.onnx, text.onnx (and match.onnx).
    Its fingerprint is the PyTorch model's, so an index that model built opens with the export."""

    def __init__(self, folder: Path):
        self.graphs = Graphs(folder)
        self.info = self.graphs.info
        self.config = load_config(folder / CONFIG)
        self.saved = SavedModel(None, self.config, load_tokenizer(folder / TOKENIZER), None)
        self.model, self.model_dir, self.fingerprint = None, folder.resolve(), self.info.get("fingerprint", "")

    @property
    def dim(self) -> int:
        return self.graphs.sessions["image.onnx"].get_outputs()[0].shape[-1]

    @property
    def can_rerank(self) -> bool:
        return "match.onnx" in self.graphs.sessions

    @property
    def logit_scale(self) -> float:
        if "logit_scale" not in self.info:
            raise ConfigError(f"{self.model_dir} was exported before export_info.json kept the model's logit scale, "
                              "which re-ranking weighs by: export the model again")
        return float(self.info["logit_scale"])

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def embed_image_tensors(self, images: torch.Tensor) -> np.ndarray:
        """uint8 [B, 3, S, S] -> unit embeddings [B, E] (averaged with the mirror's: retrieval.flip_average)."""
        embedded = self.graphs.run("image.onnx", images=images)[0].astype(np.float32, copy=False)
        if not self.config.retrieval.flip_average:
            return embedded
        mirrored = self.graphs.run("image.onnx", images=images.flip(-1))[0]
        return torch.nn.functional.normalize(torch.from_numpy(embedded + mirrored), dim=-1).numpy()

    def embed_text_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
        return self.graphs.run("text.onnx", input_ids=input_ids, attention_mask=attention_mask)[0]

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self.embed_text_ids(*self.text_ids(texts)).astype(np.float32, copy=False)

    def match_ids(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Row-aligned images and texts: (cosine similarity [B], the re-ranking score [B]: MatchGraph's)."""
        if not self.can_rerank:
            raise ConfigError(CANNOT_RERANK)
        similarity, score = self.graphs.run("match.onnx", images=images, input_ids=input_ids,
                                            attention_mask=attention_mask)
        if self.config.retrieval.flip_average:  # the graph's similarity is of the photos as they are
            similarity = (self.embed_image_tensors(images) * self.embed_text_ids(input_ids, attention_mask)).sum(-1)
        return similarity, score

    def match(self, images: torch.Tensor, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = self.text_ids([text])
        return self.match_ids(images, ids.expand(len(images), -1), mask.expand(len(images), -1))


def load_exported(folder: str | Path) -> ExportedPredictor | ExportedRetrievalEncoder:
    folder = Path(folder)
    task = read_export_info(folder).get("task")
    return (ExportedRetrievalEncoder if task == "retrieval" else ExportedPredictor)(folder)
