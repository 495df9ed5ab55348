"""Task generation: text -> image (a VQ-VAE and a caption-conditioned Transformer prior over its codes).

    vlfuse train configs/generation_shapes.yaml      (stage 1 VQ-VAE, then stage 2 prior, one run)
    vlfuse generate runs/generation_shapes/model --text "a red circle at the top left, ..." --out x.png
    vlfuse eval runs/generation_shapes/model         (object-level faithfulness on the test captions)

The Python face is predict.py (`generate(load_generator(model_dir), text, n, seed)` -> PIL images).
"""

from ..base import Task
from .evaluate import evaluate_generation_split
from .module import prepare_generation
from .report import format_generation_metrics

TASK = Task("generation", prepare_generation, evaluate_generation_split, format_generation_metrics)
