"""Task multitask: schedules, encoders shared by identity, per-task losses, a tiny run through the CLI with
every member evaluated and used for prediction, and bad configs as one line."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_TRAIN
from helpers import assert_one_line_error

REPO = Path(__file__).resolve().parents[2]
SHARED = [  # the one pair of encoders every member names (the multitask config's model section)
    "model.dim=16",
    "model.image_encoder={name: cnn, channels: [8, 16], layers: 1, heads: 2, dropout: 0.0}",
    "model.text_encoder={name: transformer, layers: 1, heads: 2, dropout: 0.0}",
    "data.image_size=32",
    "data.max_question_length=64",  # the shared text encoder's positions (captioning's decoder has its own)
]
HEADS = {  # each member's own parts, tiny
    "vqa": ["model.fusion={name: co_attention, layers: 1, heads: 2, dropout: 0.0}",
            "model.head={name: classifier, hidden: 16, dropout: 0.0}"],
    "retrieval": ["model.fusion={name: cross_attention, layers: 1, heads: 2, dropout: 0.0}",
                  "model.head={name: dual_encoder, embed_dim: 8}"],
    "captioning": ["model.decoder={name: transformer, layers: 1, heads: 2, dropout: 0.0}", "captioning.eval_batch=4"],
    "matching": ["model.fusion={name: cross_attention, layers: 1, heads: 2, dropout: 0.0}",
                 "model.head={name: classifier, hidden: 16, dropout: 0.0}"],
}
TRAIN = [*TINY_TRAIN, "train.max_minutes=null", "train.epochs=1"]


def write_yaml(path: Path, config) -> Path:
    from vlfuse.config import to_dict

    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
    return path


def member_file(folder: Path, task: str, shapes_root: Path, *extra: str) -> Path:
    from vlfuse.config import load_config

    config = load_config(REPO / "configs" / f"{task}_shapes.yaml",
                         [f"data.root={shapes_root}", *SHARED, *HEADS[task], *TRAIN, *extra])
    return write_yaml(folder / f"{task}.yaml", config)


def multitask_config(folder: Path, shapes_root: Path, tasks=tuple(HEADS), *extra: str, member_extra=()):
    """The multitask config (and its members' files in `folder`) at the tiny settings."""
    from vlfuse.config import load_config

    members = {task: str(member_file(folder, task, shapes_root, *member_extra)) for task in tasks}
    return load_config(overrides=["task=multitask", f"out_dir={folder / 'run'}", *SHARED, *TRAIN,
                                  f"multitask.tasks={json.dumps(members)}", *extra])


# --------------------------------------------------------------------------- schedules

def test_round_robin_takes_the_members_in_turn():
    from vlfuse.tasks.multitask.schedule import Schedule

    schedule = Schedule([10, 30, 5], "round_robin", 2.0, seed=0)
    assert [schedule.position(s) for s in range(7)] == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2)]
    assert schedule.shares == pytest.approx([1 / 3] * 3)


def test_temperature_shares_match_a_hand_worked_example():
    from vlfuse.tasks.multitask.schedule import task_shares

    # sizes 100 and 400: proportional 100/500, 400/500; T=2: sqrt -> 10 and 20 -> 1/3, 2/3
    assert task_shares([100, 400], "proportional") == pytest.approx([0.2, 0.8])
    assert task_shares([100, 400], "temperature", 2.0) == pytest.approx([1 / 3, 2 / 3])
    assert task_shares([100, 400], "temperature", 1.0) == pytest.approx([0.2, 0.8])
    assert task_shares([100, 400], "temperature", 1e6) == pytest.approx([0.5, 0.5], abs=1e-4)


def test_drawn_schedules_keep_their_shares_and_depend_on_seed_and_step_alone():
    from vlfuse.tasks.multitask.schedule import Schedule

    schedule = Schedule([100, 400], "proportional", 1.0, seed=3)
    tasks = [schedule.task(s) for s in range(4000)]
    assert Counter(tasks)[1] / 4000 == pytest.approx(0.8, abs=0.03)
    # a fresh schedule asked for step 2500 first (a resumed run) agrees, batch counts included
    late = Schedule([100, 400], "proportional", 1.0, seed=3)
    assert late.position(2500) == schedule.position(2500)
    assert schedule.position(2500)[1] == tasks[:2500].count(tasks[2500])
    assert [Schedule([100, 400], "proportional", 1.0, seed=4).task(s) for s in range(50)] != tasks[:50]


# --------------------------------------------------------------------------- one model, shared encoders

@pytest.fixture(scope="module")
def prepared(shapes_root, tmp_path_factory):
    from vlfuse.tasks import TASKS

    folder = tmp_path_factory.mktemp("multitask_prepare")
    config = multitask_config(folder, shapes_root)
    return config, TASKS["multitask"].prepare(config, folder / "run" / "model", False, False)


def test_members_share_one_image_and_one_text_encoder_by_identity(prepared):
    _, ready = prepared
    models = {name: member.model for name, member in ready.module.model.items()}
    image = models["vqa"].image_encoder
    assert all(m.image_encoder is image for m in models.values())
    assert models["retrieval"].text_encoder is models["vqa"].text_encoder is models["matching"].text_encoder
    # each shared weight is one parameter of the optimiser, not one per member
    params = list(ready.module.model.parameters())
    assert len(params) == len({id(p) for p in params})
    assert ready.summary["shared"]["image_encoder"] == sum(p.numel() for p in image.parameters())


def test_members_read_one_vocabulary(prepared):
    from vlfuse.models.saved import TOKENIZER

    config, _ = prepared
    model_dir = Path(config.out_dir) / "model"
    vocab = {name: json.loads((model_dir / name / TOKENIZER).read_text())["model"]["vocab"]
             for name in ("vqa", "retrieval", "matching")}
    assert vocab["vqa"] == vocab["retrieval"] == vocab["matching"]


def test_each_step_logs_its_members_losses_under_its_name(prepared):
    config, ready = prepared
    module, data = ready.module, ready.datamodule
    logged = []
    module.log = lambda key, value, **kw: logged.append(key)
    trainer = type("T", (), {"global_rank": 0, "world_size": 1})()
    trainer.fit_loop = type("F", (), {"epoch_loop": type("E", (), {"batch_progress": type("B", (), {
        "current": type("C", (), {"processed": 0})()})()})()})()
    data.trainer = trainer
    loader = data.train_dataloader()
    steps = iter(loader)
    for expected in ("vqa", "retrieval", "captioning", "matching"):
        batch = next(steps)
        assert batch["task"] == expected
        loss = module.training_step(batch, 0)
        assert loss.ndim == 0 and torch.isfinite(loss)
        assert f"train_{expected}_loss" in logged
    assert {"train_vqa_acc", "train_retrieval_itc", "train_captioning_token_acc", "train_matching_acc"} <= set(logged)


# --------------------------------------------------------------------------- end to end through the CLI

def test_a_tiny_multitask_run_trains_exports_and_evaluates_every_member(shapes_root, tmp_path, cli_main):
    config = multitask_config(tmp_path, shapes_root)
    path = write_yaml(tmp_path / "multitask.yaml", config)
    result = cli_main("train", path)
    assert result.returncode == 0, result.stderr
    out = Path(config.out_dir)
    run = json.loads((out / "run.json").read_text())
    assert run["task"] == "multitask" and run["steps"] == run["planned_steps"] == 16  # 4 members x 4 batches
    with (out / "logs" / "metrics.csv").open() as f:
        header = f.readline().strip().split(",")
    for task in HEADS:
        assert f"train_{task}_loss" in header and f"val_{task}_loss" in header
        assert (out / "model" / task / "model.safetensors").is_file()
    evaluated = json.loads((out / "eval.json").read_text())
    assert set(evaluated["tasks"]) == set(HEADS) and evaluated["count"] > 0
    assert "== captioning (test split) ==" in result.stdout

    again = cli_main("eval", out / "model", "--split", "val", "--out", tmp_path / "val.json")
    assert again.returncode == 0, again.stderr
    metrics = json.loads((tmp_path / "val.json").read_text())
    assert metrics["tasks"]["vqa"]["overall"]["count"] > 0 and metrics["tasks"]["retrieval"]["images"] == 1
    assert set(metrics["splits"].values()) == {"val"}
    assert (tmp_path / "val_vqa.json").is_file()

    image = next((shapes_root / "images" / "test").glob("*.png"))
    caption = cli_main("predict", out / "model" / "captioning", "--image", image)
    assert caption.returncode == 0 and caption.stdout.strip()
    answer = cli_main("predict", out / "model" / "vqa", "--image", image, "--question", "how many circles are there?")
    assert answer.returncode == 0 and "%" in answer.stdout
    folder = cli_main("predict", out / "model", "--image", image, "--question", "how many circles are there?")
    assert_one_line_error(folder, "holds a multi-task run: load one of its members, captioning, matching")
    alone = cli_main("eval", out / "model" / "matching", "--split", "test", "--out", tmp_path / "m.json")
    assert alone.returncode == 0 and "accuracy" in json.loads((tmp_path / "m.json").read_text())


# --------------------------------------------------------------------------- bad configs

@pytest.mark.parametrize("override, needle", [
    ("multitask.tasks={dialogue: x.yaml}", "unknown member task 'dialogue'"),
    ("multitask.tasks={}", "multitask.tasks"),
    ("multitask.schedule=random", "multitask.schedule"),
    ("multitask.temperature=0", "multitask.temperature"),
])
def test_bad_multitask_config_is_one_line(override, needle, tmp_path, cli_main):
    path = tmp_path / "bad.yaml"
    path.write_text("task: multitask\nmultitask: {tasks: {vqa: configs/vqa_shapes.yaml}}\n")
    result = cli_main("train", path, "--set", override)
    assert_one_line_error(result, needle)


def test_a_member_with_other_encoders_is_one_line(shapes_root, tmp_path, cli_main):
    config = multitask_config(tmp_path, shapes_root, ("vqa", "retrieval"))
    retrieval = config.multitask.tasks["retrieval"]
    member_file(tmp_path, "retrieval", shapes_root, "model.text_encoder={name: transformer, layers: 2, heads: 2}")
    result = cli_main("train", write_yaml(tmp_path / "multitask.yaml", config))
    assert_one_line_error(result, f"multitask member retrieval ({retrieval}): model.text_encoder is")


def test_a_member_file_of_another_task_is_one_line(shapes_root, tmp_path, cli_main):
    config = multitask_config(tmp_path, shapes_root, ("vqa", "retrieval"))
    config.multitask.tasks["retrieval"] = config.multitask.tasks["vqa"]
    result = cli_main("train", write_yaml(tmp_path / "multitask.yaml", config))
    assert_one_line_error(result, "is a config of task vqa, not retrieval")


def test_the_shipped_multitask_config_and_its_members_agree_on_the_encoders(monkeypatch):
    from vlfuse.config import load_config
    from vlfuse.tasks.multitask.members import load_members

    monkeypatch.chdir(REPO)  # member paths are relative to where vlfuse runs, as data.root is
    config = load_config("configs/multitask_shapes.yaml")
    members = load_members(config)
    assert list(members) == ["vqa", "retrieval", "captioning", "matching"]
    assert all(m.model.image_encoder == config.model.image_encoder and m.seed == config.seed
               for m in members.values())


def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(shapes_root, tmp_path, monkeypatch):
    """A drawn schedule, a crash mid-epoch, then resume: the same members' batches at the same steps."""
    from safetensors.torch import load_file

    from vlfuse.tasks import train
    from vlfuse.tasks.multitask import module as multitask

    def config(name: str):
        folder = tmp_path / name
        folder.mkdir()
        return multitask_config(folder, shapes_root, ("vqa", "captioning"), "multitask.schedule=proportional",
                                "train.epochs=2", "train.checkpoint_every_n_steps=1")

    reference = train(config("reference"), progress=False)
    step = multitask.MultitaskModule.training_step

    def crash_at_step_11(self, batch, batch_idx):
        if self.global_step == 11:  # epoch 1 (8 steps an epoch), mid-way
            raise RuntimeError("simulated crash")
        return step(self, batch, batch_idx)

    interrupted = config("run")
    monkeypatch.setattr(multitask.MultitaskModule, "training_step", crash_at_step_11)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(interrupted, progress=False)
    monkeypatch.setattr(multitask.MultitaskModule, "training_step", step)
    resumed = train(interrupted, resume=True, progress=False)
    for task in ("vqa", "captioning"):
        ours, theirs = (load_file(str(r.model_dir / task / "model.safetensors")) for r in (resumed, reference))
        assert list(ours) == list(theirs)
        assert all(torch.allclose(ours[k], theirs[k], atol=1e-6, rtol=0) for k in theirs), task
