"""explain(): one image and one question -> the answer and where in the image it came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.formats.common import check_question
from ..data.images import image_to_tensor, open_image
from ..data.tokenizer import encode_ids, pad_ids
from ..predict import Predictor, load
from .base import ExplainError
from .capture import fusion_name, run_model
from .gradcam import gradcam, saliency
from .maps import attention_weights
from .occlusion import occlusion
from .paint import paint
from .rollout import rollout_weights

METHODS = ("attention", "rollout", "gradcam", "saliency", "occlusion")
# methods that weigh each image token for the answer as a whole: no per-word view, no layer or head
TOKEN_METHODS = {"gradcam": gradcam, "saliency": saliency, "occlusion": occlusion}


@dataclass
class Explanation:
    """heatmap and per_word are at the size of the image as given (explain_input: of `shown`), each a
    distribution over pixels."""

    answer: str
    confidence: float
    heatmap: np.ndarray  # [H, W] float32, sums to 1 (all zero if no image token got any weight)
    per_word: np.ndarray | None  # [Nt, H, W], one map per entry of `tokens`; None for the token methods
    tokens: list[str]  # the question as the model's tokenizer split it
    question: str
    method: str
    image: np.ndarray  # [H, W, 3] uint8, the picture the maps are painted on
    token_boxes: np.ndarray  # [Nv, 4] boxes of the real image tokens, (x0, y0, x1, y1) in [0, 1]


def explain(model, image, question: str, method: str = "attention", layer: int | None = None,
            head: int | None = None) -> Explanation:
    """model: a saved model directory or a Predictor (vlfuse.load); image: a path, bytes or a PIL image.

    method: "attention" (raw word -> image attention; `layer`, `head` pick one, default: the mean),
    "rollout" (attention flow through the layers; `layer` stops after that layer, `head` picks a
    head in every layer); for every fusion, with no layer or head: "gradcam" (gradient x activation),
    "saliency" (the gradient's norm) or "occlusion" (the answer's loss without each token).
    """
    check_method(method, layer, head)
    predictor = model if isinstance(model, Predictor) else load(model)
    picture = open_image(image)
    return explain_input(predictor, image_to_tensor(picture, predictor.config.data.image_size), picture, question,
                         method, layer, head)


def check_method(method: str, layer: int | None = None, head: int | None = None) -> None:
    if method not in METHODS:
        raise ExplainError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method in TOKEN_METHODS and (layer is not None or head is not None):
        raise ExplainError(f"layer and head choose attention maps; {method} has neither")


def explain_input(predictor: Predictor, image: torch.Tensor, shown, question: str, method: str = "attention",
                  layer: int | None = None, head: int | None = None) -> Explanation:
    """explain() on an image already made the model's input (uint8 [3, S, S], as image_to_tensor makes it);
    the maps are painted at the size of `shown` (a PIL RGB image: the picture itself, or a smaller copy of
    it, which keeps the maps small: a map costs 4 bytes a pixel, and there is one per word)."""
    check_method(method, layer, head)
    if predictor.model is None:  # vlfuse export's folder: onnxruntime gives neither attention maps nor gradients
        raise ExplainError("an exported (ONNX) model cannot be explained: explain the PyTorch model it came from")
    net, config = predictor.model.eval(), predictor.config
    question = check_question(question)
    device = next(net.parameters()).device
    ids, mask = (t.to(device) for t in pad_ids(encode_ids(predictor.tokenizer, [question],
                                                          config.data.max_question_length)))
    images = image.unsqueeze(0).to(device)
    if method in TOKEN_METHODS:
        weights, logits, features = TOKEN_METHODS[method](net, images, ids, mask)
    else:
        with torch.no_grad():
            logits, fused, features = run_model(net, images, ids, mask, need_weights=True)
        find = attention_weights if method == "attention" else rollout_weights
        weights = find(fused.attentions, fusion_name(net), mask, features.mask, layer, head)
    if features.boxes is None:
        raise ExplainError("the image encoder gives no token boxes, so its tokens cannot be placed on the image")
    size, boxes, real = (shown.height, shown.width), features.boxes[0], features.mask[0]
    probs = logits[0].float().softmax(-1)
    best = int(probs.argmax())
    per_word = None if weights.per_word is None else paint(weights.per_word[0], boxes, size, real).cpu().numpy()
    return Explanation(
        answer=predictor.answers[best], confidence=float(probs[best]),
        heatmap=paint(weights.pooled[0], boxes, size, real).cpu().numpy(), per_word=per_word,
        tokens=[predictor.tokenizer.id_to_token(i) or "?" for i in ids[0].tolist()], question=question,
        method=method, image=np.asarray(shown), token_boxes=boxes[real].detach().cpu().numpy())
