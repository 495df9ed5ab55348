"""Task multitask's evaluation: every member on its own data, as its own task evaluates it."""

from __future__ import annotations

from pathlib import Path

from ...config import Config, load_config
from ...errors import ConfigError
from ...models.saved import CONFIG
from ...train.run import Evaluate
from ..base import evaluated_count, write_eval_json


def member_split(member: Config, split: str, name: str) -> str:
    """The member's `split`; test falls back to val where the member's data has no test split."""
    if getattr(member.data, split, None) is not None:
        return split
    if split == "test" and member.data.val is not None:
        return "val"
    raise ConfigError(f"multitask member {name}: its data has no {split} split to evaluate")


def evaluate_multitask_split(model_dir: Path, config: Config, split: str, out_json: Path | None,
                             progress: bool = True, *, evaluate: Evaluate) -> dict:
    """{"tasks": {task: its metrics}, "splits": {task: split}, "count"}; each member's metrics (and
    predictions) also beside out_json as <stem>_<task>.json."""
    metrics: dict = {"tasks": {}, "splits": {}}
    for name in config.multitask.tasks:
        member_dir = Path(model_dir) / name
        member = load_config(member_dir / CONFIG)
        metrics["splits"][name] = chosen = member_split(member, split, name)
        member_json = None if out_json is None else out_json.with_name(f"{out_json.stem}_{name}.json")
        metrics["tasks"][name] = evaluate(member_dir, member, chosen, member_json, progress)
    metrics["count"] = sum(evaluated_count(m) or 0 for m in metrics["tasks"].values())
    return write_eval_json(out_json, metrics)
