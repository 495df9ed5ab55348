"""Task retrieval: image-text contrastive training and two-stage (LAVIS) retrieval evaluation.

Training: each batch pairs B images with one caption each, so the other images are the negatives.
Loss = InfoNCE at a learnable temperature (+ hinge_weight * VSE++ hinge) + itm_weight * the
matching loss on hard negatives drawn from the batch similarities (when model.fusion is set).

Evaluation: embed every image and caption of the split once, rank by cosine similarity (first
stage), then re-rank each query's top k with the matching head, score = ITC + w * ITM (ITC = the
contrastive logit, cosine x learned scale; ITM = the head's log-odds of a match; w =
retrieval.rerank_weight); candidates beyond the top k keep their first-stage order below them.
With data.feature_cache the frozen encoders' outputs (images, and a frozen text encoder's states)
come from the cache, in training and evaluation alike.
Recall@1/5/10 and median / mean rank are reported in both directions for both stages.
"""

from ..base import Task
from .evaluate import evaluate_retrieval_split
from .module import prepare_retrieval
from .report import format_retrieval_metrics

TASK = Task("retrieval", prepare_retrieval, evaluate_retrieval_split, format_retrieval_metrics)
