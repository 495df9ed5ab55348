"""The task table and the base every task shares: one Task per config task, one saved_task, a shared
loop that names no task, a LightningModule base that logs every loss key, one eval-JSON writer."""

from __future__ import annotations

import ast
import json
import typing
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parents[2] / "src" / "vlfuse"


def test_every_config_task_has_one_task_entry_named_like_its_key():
    from vlfuse.config import Config
    from vlfuse.tasks import TASKS
    from vlfuse.tasks.base import Task

    names = typing.get_args(typing.get_type_hints(Config)["task"])
    assert sorted(TASKS) == sorted(names)
    for name, task in TASKS.items():
        assert isinstance(task, Task) and task.name == name
        assert callable(task.prepare) and callable(task.evaluate_split) and callable(task.format_metrics)
    # matching and classification share one implementation, each under its own name
    assert TASKS["matching"].prepare is TASKS["classification"].prepare


def _imports(path: Path) -> list[str]:
    """Every module name an import statement in `path` names (relative ones with their dots)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def test_the_shared_loop_imports_no_task_and_no_task_is_found_by_a_string():
    for path in (SRC / "train").glob("*.py"):
        assert not [n for n in _imports(path) if "tasks" in n.split(".") or n.lstrip(".") == "tasks"], path
    for path in [SRC / "tasks" / "__init__.py", *(SRC / "train").glob("*.py")]:
        assert "importlib" not in _imports(path), path


def test_saved_task_reads_the_config_of_a_model_directory(trained_run, tmp_path):
    from vlfuse.errors import DataError
    from vlfuse.tasks import saved_task

    assert saved_task(trained_run.model_dir) == "vqa"
    with pytest.raises(DataError, match="config.yaml is missing") as error:
        saved_task(tmp_path)
    assert str(tmp_path) in str(error.value)


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(2.0))


def _module_logging_into(logged: list):
    from vlfuse.config import TrainConfig
    from vlfuse.tasks.base import TaskModule

    class Toy(TaskModule):
        shown = ("loss", "acc")

        def losses(self, batch):
            loss = self.model.weight * batch["x"].mean()
            return {"loss": loss, "acc": torch.tensor(0.5), "extra": loss * 3}

    module = Toy(_Toy(), TrainConfig(), total_steps=4)
    module.log = lambda name, value, **kwargs: logged.append((name, float(value.detach()), kwargs))
    return module


def test_the_base_module_logs_every_loss_key_for_training_and_validation():
    logged = []
    module = _module_logging_into(logged)
    batch = {"x": torch.tensor([1.0, 3.0]), "input_ids": torch.zeros(2, 5)}
    loss = module.training_step(batch, 0)
    assert float(loss.detach()) == 4.0 and loss.requires_grad
    assert [(n, v) for n, v, _ in logged] == [("train_loss", 4.0), ("train_acc", 0.5), ("train_extra", 12.0)]
    assert [k["prog_bar"] for *_, k in logged] == [True, True, False]
    assert all(k["batch_size"] == 2 and not k["sync_dist"] for *_, k in logged)
    logged.clear()
    assert module.validation_step(batch, 3) is None
    assert [n for n, *_ in logged] == ["val_loss", "val_acc", "val_extra"]
    assert all(k["sync_dist"] for *_, k in logged)


def test_the_base_module_draws_from_seed_and_step_alone():
    module = _module_logging_into([])
    module.seed, module.draw_step = 3, 7
    first = torch.rand(4, generator=module.generator())
    assert torch.equal(first, torch.rand(4, generator=module.generator()))
    module.draw_step = 8
    assert not torch.equal(first, torch.rand(4, generator=module.generator()))


def test_write_eval_json_writes_metrics_and_one_line_per_record(tmp_path):
    from vlfuse.tasks.base import write_eval_json

    metrics = {"accuracy": 0.5, "note": "é"}
    out = tmp_path / "eval_test.json"
    assert write_eval_json(out, metrics, [{"id": 1}, {"id": 2}], "rankings") is metrics
    assert json.loads(out.read_text(encoding="utf-8")) == metrics
    lines = (tmp_path / "eval_test_rankings.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"id": 1}, {"id": 2}]
    assert write_eval_json(None, metrics, [{"id": 3}]) is metrics  # nothing to write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_test.json", "eval_test_rankings.jsonl"]


def test_each_task_formats_its_metrics_as_text():
    from vlfuse.tasks import TASKS

    pretrain = {"task": "pretrain", "split": "val", "images": 4, "itc": 0.25, "skipped": {"count": 0}}
    text = TASKS["pretrain"].format_metrics(pretrain)
    assert "Pre-training" in text and "4 images" in text and "│ itc │ 0.2500 │" in text
    vqa = {"overall": {"accuracy": 0.75, "count": 8}, "families": {"color": {"accuracy": 0.5, "count": 4}},
           "unanswerable": 2}
    text = TASKS["vqa"].format_metrics(vqa)
    assert "75.00" in text and "color" in text and "2 questions have an answer that is not among" in text
