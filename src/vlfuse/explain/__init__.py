"""Explain a prediction: where in the image the model looked.

    from vlfuse.explain import explain
    result = explain("runs/vqa_shapes/model", "image.png", "What is the shape of the red object?")
    result.answer, result.heatmap  # [H, W] at the image's own size, a distribution over pixels

Modules, one job each:
    base      the shared pieces: ExplainError, TokenWeights, where text and image sit in joint sequences
    capture   run a model once and keep the image encoder's Features (their token boxes)
    paint     token weights + token boxes -> pixel heatmaps
    maps      raw attention maps: word -> image token weights per layer, head and word
    rollout   attention rollout across layers (Abnar & Zuidema 2020)
    gradcam   Grad-CAM and saliency on the image tokens (every fusion, attention-free ones too)
    occlusion each image token left out in turn: what the answer loses (every fusion)
    api       explain(): one image, one question -> Explanation
    plot      the figure: image, overlay, one small map per word
    sanity    on the built-in shapes data: how much of the map falls on the object a question names

`vlfuse.explain` is not re-exported as `vlfuse.explain(...)`: importing this subpackage would
replace such a function with the module (Python sets the parent's attribute on import).
"""

from .api import METHODS, Explanation, explain
from .base import ExplainError

__all__ = ["explain", "Explanation", "ExplainError", "METHODS"]
