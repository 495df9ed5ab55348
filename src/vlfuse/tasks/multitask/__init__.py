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

from collections.abc import Mapping
from functools import partial

from ...train.run import Evaluate
from ..base import Task
from .evaluate import evaluate_multitask_split
from .module import prepare_multitask
from .report import format_multitask_metrics


def multitask_task(members: Mapping[str, Task], evaluate: Evaluate) -> Task:
    """Task multitask over `members` (the single tasks, by name); `evaluate` evaluates one member's split
    as `vlfuse eval` does (vlfuse.tasks.evaluate_split)."""
    return Task("multitask", partial(prepare_multitask, members=members),
                partial(evaluate_multitask_split, evaluate=evaluate),
                partial(format_multitask_metrics, members=members))
