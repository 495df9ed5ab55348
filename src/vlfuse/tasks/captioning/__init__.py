"""Task captioning: teacher-forced cross-entropy training; evaluation by beam search against every reference.

Training: each batch holds B images with every caption written for each (an image is encoded once
for all of its captions); the decoder reads BOS w1 ... wn and predicts w1 ... wn EOS, the loss is
cross-entropy over the real tokens (captioning.label_smoothing optional).

Evaluation: one caption per image by beam search (captioning.beam_size, length_penalty,
max_length), scored with corpus BLEU-1..4, ROUGE-L and CIDEr-D against all of the image's reference
captions (metrics.captioning). With captioning.select_on, the val images are captioned the same way
after every validation and the weights of the best-scoring one are kept (captioning.patience stops
early). With data.feature_cache, training and evaluation read the frozen image encoder's cached
output instead of running it.
"""

from ..base import Task
from .evaluate import evaluate_captioning_split
from .module import prepare_captioning
from .report import format_caption_metrics

TASK = Task("captioning", prepare_captioning, evaluate_captioning_split, format_caption_metrics)
