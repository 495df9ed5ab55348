"""An exported folder as a Predictor: the same predict / predict_many, answered by onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import load_config
from ..data.answers import AnswerVocab
from ..data.tokenizer import load_tokenizer
from ..errors import ConfigError, DataError
from ..models.saved import ANSWERS, CONFIG, TOKENIZER
from ..predict import Predictor
from . import EXPORT_INFO
from .graphs import graph_inputs


def read_export_info(path: Path) -> dict:
    try:
        info = json.loads((path / EXPORT_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable ({exc})", path=path / EXPORT_INFO) from None
    if not isinstance(info, dict) or info.get("format") != "onnx" or not isinstance(info.get("graph"), str):
        raise DataError("not an ONNX export's description (format: onnx and graph expected)", path=path / EXPORT_INFO)
    return info


class ExportedPredictor(Predictor):
    """Predictor over an ONNX graph. Runs on as many threads as torch would (torch.get_num_threads()),
    so OMP_NUM_THREADS bounds both alike."""

    def __init__(self, folder: Path):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("running an exported model needs onnxruntime: pip install 'vlfuse[export]'") from None
        self.folder, self.info = folder, read_export_info(folder)
        for name in (CONFIG, TOKENIZER, ANSWERS, self.info["graph"]):
            if not (folder / name).is_file():
                raise DataError(f"not a complete exported model: {name} is missing", path=folder)
        self.saved, self.model = None, None  # no PyTorch model: explanations and fine-tuning need the original
        self.config, self.tokenizer = load_config(folder / CONFIG), load_tokenizer(folder / TOKENIZER)
        self.answers = AnswerVocab.load(folder / ANSWERS)
        self._warned_no_scene = False
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        self.session = ort.InferenceSession(str(folder / self.info["graph"]), options,
                                            providers=["CPUExecutionProvider"])

    def logits(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               image_index: torch.Tensor | None = None, graph=None) -> torch.Tensor:
        if graph is not None:
            raise ConfigError("an exported model reads no scene graphs")
        feeds = graph_inputs(images, input_ids, attention_mask, image_index, self.info.get("region_proposal"))
        return torch.from_numpy(self.session.run(["logits"], feeds)[0]).float()


def load_exported(folder: str | Path) -> ExportedPredictor:
    return ExportedPredictor(Path(folder))
