"""Task pretrain (`vlfuse pretrain CONFIG`): image-caption pre-training of a VQA model's encoders + fusion.

The data is a caption format (COCO captions: the built-in `data/shapes/captions`, COCO-mini); each
batch pairs B images with one caption each, and every enabled objective of `pretrain.objectives`
runs on it (see vlfuse.models.pretrain). The run directory is an ordinary one (checkpoints,
`--resume`, logs/metrics.csv); OUT_DIR/model is the directory to fine-tune from:

  config.yaml, tokenizer.json        the word tokenizer (captions + `pretrain.vocabulary_data` texts, plus
                                     [MASK]) that fine-tuning reuses
  model.safetensors                  image_encoder.*, text_encoder.*, fusion.*: what `--init` loads
  pretrain_heads.safetensors         the objectives' heads (for `vlfuse eval` of the pre-training losses)
"""

from ..base import Task
from .evaluate import evaluate_pretrain_split
from .module import prepare_pretrain
from .report import format_pretrain_metrics

TASK = Task("pretrain", prepare_pretrain, evaluate_pretrain_split, format_pretrain_metrics)
