"""Task multitask: one model whose image and text encoders are shared by several task heads (vqa,
retrieval, captioning, matching, classification), trained in one run.

Each member is prepared by its own task from its own config file (data, head, batch size); the members'
models are then tied to one image encoder (and one text encoder, for the members that have one, reading
one vocabulary built over all their training texts). Each step trains one member's batch, chosen by
multitask.schedule from (seed, step); losses are logged as train_<task>_<key>, val_<task>_<key>.

After training, OUT_DIR/model/<task>/ holds each member exactly as that task's own training saves it
(so `vlfuse predict`, `serve`, `eval` load it as any model), and OUT_DIR/model/config.yaml the
multitask config: `vlfuse eval OUT_DIR/model` evaluates every member.
"""

from ..base import Task
from .evaluate import evaluate_multitask_split
from .module import prepare_multitask
from .report import format_multitask_metrics

TASK = Task("multitask", prepare_multitask, evaluate_multitask_split, format_multitask_metrics)
