"""The shared training loop when things go wrong: divergence, a second run on one out_dir, bad config
values, empty splits, a full disk, a time cap, Ctrl-C, and a resume that is bit-identical.

Everything trains conftest's tiny model (14 train images, batch 4: 4 steps an epoch, 8 in all),
in this process, so each case costs a few seconds.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vlfuse.train.run  # noqa: F401 - Lightning's log handler must bind to the real stderr, not a test's capture
from helpers import assert_one_line_error, read_json

STEPS = 8  # 2 epochs x 4 steps
# Dropout on, so the random streams matter: a resume must replay them exactly.
DROPOUT = ["model.head={name: classifier, hidden: 16, dropout: 0.3}",
           "model.fusion={name: co_attention, layers: 1, heads: 2, dropout: 0.2}"]
TINY_CAP = "train.max_minutes=0.000001"  # reached by the end of the first step: a deterministic cut


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def assert_same_weights(out: Path, reference: Path) -> None:
    mine, theirs = weights(out), weights(reference)
    assert list(mine) == list(theirs)
    differ = {k: (mine[k] - theirs[k]).abs().max().item() for k in theirs if not torch.equal(mine[k], theirs[k])}
    assert not differ, f"{len(differ)} of {len(theirs)} tensors differ, max |d| {max(differ.values()):.3g}"


def csv_rows(out: Path) -> list[dict]:
    with (out / "logs" / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def reference(shapes_root, tmp_path_factory):
    """The uninterrupted run, with dropout, that cut and resumed runs must equal bit for bit."""
    from vlfuse.config import load_config
    from conftest import BASE_CONFIG, tiny_overrides
    from vlfuse.tasks import train

    out = tmp_path_factory.mktemp("reference") / "run"
    train(load_config(BASE_CONFIG, tiny_overrides(shapes_root, out, *DROPOUT)), progress=False)
    return out


# --------------------------------------------------------------------------- #22: the time cap

@pytest.fixture(scope="module")
def capped(shapes_root, write_config, tmp_path_factory):
    """`vlfuse train` cut by a tiny time cap, then continued: once more under the same cap (it is summed
    over the run, so it stops again), then with a raised one."""
    from vlfuse.cli import main

    root = tmp_path_factory.mktemp("capped")
    out = root / "run"
    config = write_config(root / "tiny.yaml", shapes_root, out, *DROPOUT, TINY_CAP)

    def vlfuse(*args):
        old = sys.argv
        sys.argv = ["vlfuse", *map(str, args)]
        try:
            main()
            return 0
        except SystemExit as exc:
            return exc.code
        finally:
            sys.argv = old

    stages = {}
    for name, args in [("cut", []), ("cut again", ["--resume"]),
                       ("resumed", ["--resume", "--set", "train.max_minutes=60"]),
                       ("resumed twice", ["--resume", "--set", "train.max_minutes=60"])]:
        code = vlfuse("train", config, *args)
        stages[name] = {"code": code, "run": read_json(out / "run.json") if (out / "run.json").is_file() else None,
                        "eval": read_json(out / "eval.json") if (out / "eval.json").is_file() else None,
                        "last": (out / "checkpoints" / "last.ckpt").is_file()}
    return {"out": out, "config": config, "stages": stages}


def test_time_cap_cut_is_recorded_and_keeps_the_checkpoint(capped):
    cut = capped["stages"]["cut"]
    assert cut["code"] in (0, None)
    run = cut["run"]
    assert run["stopped_by"] == "time cap" and run["steps"] == 1 and run["planned_steps"] == STEPS
    assert run["note"] == f"stopped by the time cap at step 1 of {STEPS}: the model is undertrained"
    assert run["interrupted"] is False
    assert cut["last"], "a run cut by its time cap must keep checkpoints/last.ckpt"
    # The evaluation of the exported (undertrained) model says so too.
    assert cut["eval"]["training"] == {"stopped_by": "time cap", "steps": 1, "planned_steps": STEPS,
                                       "note": run["note"]}


def test_time_cap_is_summed_over_resumes(capped):
    again = capped["stages"]["cut again"]
    assert again["run"]["stopped_by"] == "time cap" and again["run"]["steps"] == 2 and again["last"]


def test_resume_with_a_raised_cap_finishes_like_an_uncut_run(capped, reference):
    done = capped["stages"]["resumed"]
    assert done["code"] in (0, None)
    assert done["run"]["stopped_by"] is None and "note" not in done["run"]
    assert done["run"]["steps"] == read_json(reference / "run.json")["steps"] == STEPS
    assert "training" not in done["eval"]
    assert not done["last"], "a finished run cleans up its checkpoint"
    assert_same_weights(capped["out"], reference)
    assert csv_rows(capped["out"]) == csv_rows(reference), "metrics.csv must hold each step once, as uncut"


def test_finished_run_still_refuses_resume(capped):
    assert capped["stages"]["resumed twice"]["code"] == 2


def test_cli_says_the_time_cap_cut_training(shapes_root, write_config, cli_main, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", shapes_root, tmp_path / "run", TINY_CAP)
    result = cli_main("train", config)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"stopped by the time cap at step 1 of {STEPS}: the model is undertrained")
    assert "--resume" in last
    # Evaluating that model later says so too.
    evaluated = cli_main("eval", tmp_path / "run" / "model")
    assert evaluated.returncode == 0 and "stopped by the time cap at step 1" in evaluated.stdout


# --------------------------------------------------------------------------- #17.6: bit-identical resume

def test_ctrl_c_stops_after_the_step_and_resume_is_bit_identical(shapes_root, tiny_config, reference, tmp_path,
                                                                   monkeypatch):
    from vlfuse.tasks.vqa import module
    from vlfuse.tasks import train

    step = module.VQAModule.training_step

    def press_ctrl_c_at_step_3(self, batch, batch_idx):
        if self.global_step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, batch, batch_idx)

    out = tmp_path / "run"
    config = tiny_config(shapes_root, out, *DROPOUT)
    monkeypatch.setattr(module.VQAModule, "training_step", press_ctrl_c_at_step_3)
    result = train(config, progress=False)
    monkeypatch.undo()
    assert result.interrupted and result.stopped_by == "interrupted"
    run = read_json(out / "run.json")
    assert run["steps"] == 4 and run["stopped_by"] == "interrupted"  # step 3 finished, then it stopped
    assert not (out / "model" / "model.safetensors").exists()
    assert signal.getsignal(signal.SIGINT) is not None  # the handler was given back

    resumed = train(config, resume=True, progress=False)
    assert not resumed.interrupted and resumed.stopped_by is None
    assert_same_weights(out, reference)
    assert csv_rows(out) == csv_rows(reference)


def test_a_lowered_lr_applies_on_resume(shapes_root, tiny_config, tmp_path):
    from vlfuse.train.checkpoint_io import load_checkpoint_file
    from vlfuse.tasks import train

    out = tmp_path / "run"
    train(tiny_config(shapes_root, out, TINY_CAP), progress=False)
    before = load_checkpoint_file(out / "checkpoints" / "last.ckpt")["lr_schedulers"][0]["base_lrs"]
    # Cut again after one more step, now at a tenth of the learning rate.
    train(tiny_config(shapes_root, out, TINY_CAP, "train.lr=0.0001"), resume=True, progress=False)
    after = load_checkpoint_file(out / "checkpoints" / "last.ckpt")["lr_schedulers"][0]["base_lrs"]
    assert before == [0.001, 0.001] and after == pytest.approx([0.0001, 0.0001])


# --------------------------------------------------------------------------- #17.3: divergence

def test_divergence_stops_with_one_line_and_saves_nothing_non_finite(shapes_root, write_config, cli_main, tmp_path):
    out = tmp_path / "run"
    config = write_config(tmp_path / "tiny.yaml", shapes_root, out)
    line = assert_one_line_error(cli_main("train", config, "--set", "train.lr=1e9"), "diverged", "step",
                                 "train.lr")
    assert "1e+09" in line
    assert not (out / "model" / "model.safetensors").exists() and not (out / "eval.json").exists()
    last = out / "checkpoints" / "last.ckpt"
    if last.is_file():
        from vlfuse.train.checkpoint_io import load_checkpoint_file

        state = load_checkpoint_file(last)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_resume_after_divergence_continues_from_the_last_finite_checkpoint(shapes_root, tiny_config, tmp_path,
                                                                          monkeypatch):
    from vlfuse.tasks.vqa import module
    from vlfuse.train.checkpoint_io import load_checkpoint_file
    from vlfuse.train.control import TrainingDiverged
    from vlfuse.tasks import train

    step = module.VQAModule.training_step

    def nan_at_step_5(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)
        return loss * float("nan") if self.global_step == 5 else loss

    out = tmp_path / "run"
    config = tiny_config(shapes_root, out)
    monkeypatch.setattr(module.VQAModule, "training_step", nan_at_step_5)
    with pytest.raises(TrainingDiverged, match="at step 5"):
        train(config, progress=False)
    monkeypatch.undo()
    checkpoint = load_checkpoint_file(out / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 5  # the last finite step; the diverged one was never applied
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values() if t.is_floating_point())
    result = train(config, resume=True, progress=False)
    assert result.stopped_by is None and read_json(out / "run.json")["steps"] == STEPS
    assert all(torch.isfinite(t).all() for t in weights(out).values())


def test_weights_that_turn_non_finite_are_never_checkpointed(shapes_root, write_config, cli_main, tmp_path,
                                                              monkeypatch):
    from vlfuse.tasks.vqa import module
    from vlfuse.train.checkpoint_io import load_checkpoint_file

    step = module.VQAModule.training_step

    def poison_a_weight_at_step_2(self, batch, batch_idx):
        loss = step(self, batch, batch_idx)  # finite: only the weights go bad
        if self.global_step == 2:
            with torch.no_grad():
                next(self.parameters()).view(-1)[0] = float("inf")
        return loss

    out = tmp_path / "run"
    config = write_config(tmp_path / "tiny.yaml", shapes_root, out)  # a checkpoint every step
    monkeypatch.setattr(module.VQAModule, "training_step", poison_a_weight_at_step_2)
    assert_one_line_error(cli_main("train", config), "not saving a checkpoint", "NaN or infinity", "train.lr")
    monkeypatch.undo()
    assert load_checkpoint_file(out / "checkpoints" / "last.ckpt")["global_step"] == 2  # the last finite one


# --------------------------------------------------------------------------- #17.4: one run per out_dir

@pytest.fixture
def other_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_run_on_a_locked_out_dir_is_refused(shapes_root, write_config, cli_main, tmp_path, other_process):
    out = tmp_path / "run"
    out.mkdir()
    lock = out / "train.lock"
    lock.write_text(f"{other_process.pid} {socket.gethostname()}\n")
    config = write_config(tmp_path / "tiny.yaml", shapes_root, out)
    assert_one_line_error(cli_main("train", config), str(out), "in use", f"pid {other_process.pid}", str(lock))
    assert sorted(p.name for p in out.iterdir()) == ["train.lock"], "the refused run must touch nothing"
    assert lock.read_text().startswith(str(other_process.pid))


def test_a_stale_lock_of_a_dead_process_is_taken_over(shapes_root, tiny_config, tmp_path):
    from vlfuse.tasks import train

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "run"
    out.mkdir()
    (out / "train.lock").write_text(f"{int(dead.stdout)} {socket.gethostname()}\n")
    result = train(tiny_config(shapes_root, out, "train.epochs=1"), progress=False)
    assert (result.model_dir / "model.safetensors").is_file()
    assert not (out / "train.lock").exists(), "the lock is released when the run ends"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == []  # no last-v1.ckpt litter


# --------------------------------------------------------------------------- #17.5: one line, not a traceback

@pytest.mark.parametrize("setting, culprits", [
    ("train.lr=-1", ["train.lr", "> 0", "-1"]),
    ("train.lr=.nan", ["train.lr", "finite"]),
    ("train.batch_images=0", ["train.batch_images", ">= 1"]),
    ("data.image_size=-5", ["data.image_size", "-5"]),
    ("train.epochs=0", ["train.epochs"]),
    ("train.max_minutes=-2", ["train.max_minutes"]),
    ("data.train_fraction=1.5", ["data.train_fraction", "1.5"]),
    ("train.warmup_steps=-1", ["train.warmup_steps"]),
])
def test_out_of_range_config_values_are_one_line_errors(setting, culprits, shapes_root, write_config, cli_main,
                                                        tmp_path):
    config = write_config(tmp_path / "tiny.yaml", shapes_root, tmp_path / "run")
    assert_one_line_error(cli_main("train", config, "--set", setting), *culprits)
    assert not (tmp_path / "run").exists(), "nothing may run before the config is checked"


def test_every_range_names_a_config_key():
    from vlfuse.config import RANGES, Config, _leaves

    keys = {key for key, _ in _leaves(Config())}
    assert set(RANGES) <= keys, set(RANGES) - keys


def _empty_split(root: Path, split: str) -> None:
    for kind in ("questions", "annotations"):
        path = root / "vqa" / f"{split}_{kind}.json"
        doc = read_json(path)
        doc[kind] = []
        path.write_text(json.dumps(doc), encoding="utf-8")


def test_empty_train_split_is_one_line(copy_shapes, write_config, cli_main, tmp_path):
    root = copy_shapes()
    _empty_split(root, "train")
    config = write_config(tmp_path / "tiny.yaml", root, tmp_path / "run")
    assert_one_line_error(cli_main("train", config), "no usable training samples", "data.train")


def test_fully_skipped_train_split_is_one_line(copy_shapes, write_config, cli_main, tmp_path):
    root = copy_shapes()
    shutil.rmtree(root / "images" / "train")
    (root / "images" / "train").mkdir()
    config = write_config(tmp_path / "tiny.yaml", root, tmp_path / "run", "data.on_bad_sample=skip")
    assert_one_line_error(cli_main("train", config), "no usable training samples", "skipped")


def test_empty_val_and_test_splits_are_said(copy_shapes, write_config, cli_main, tmp_path):
    root = copy_shapes()
    _empty_split(root, "val")
    _empty_split(root, "test")
    out = tmp_path / "run"
    config = write_config(tmp_path / "tiny.yaml", root, out, "train.epochs=1")
    result = cli_main("train", config)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "val split" in result.stderr and "without validation" in result.stderr
    assert "test split" in result.stderr and "no usable samples" in result.stderr
    assert "0.00" not in result.stdout
    assert (out / "model" / "model.safetensors").is_file() and not (out / "eval.json").exists()
    # Evaluating the empty split on its own is an error, not an accuracy over 0 questions.
    assert_one_line_error(cli_main("eval", out / "model", "--data", config), "test split", "no usable samples")


def _fail_writes(monkeypatch, after: int) -> list:
    """Make the safetensors writer run out of disk space from its (after + 1)-th file on, leaving a
    partly written file as a real full disk does."""
    import safetensors.torch

    real, calls = safetensors.torch.save_file, []

    def save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) > after:
            Path(filename).write_bytes(b"\0" * 10)
            raise OSError(28, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    return calls


def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_previous(shapes_root, write_config, cli_main,
                                                                         tmp_path, monkeypatch):
    from vlfuse.train.checkpoint_io import load_checkpoint_file

    out = tmp_path / "run"
    config = write_config(tmp_path / "tiny.yaml", shapes_root, out)  # a checkpoint every step
    _fail_writes(monkeypatch, after=2)
    last = out / "checkpoints" / "last.ckpt"
    assert_one_line_error(cli_main("train", config), str(last), "No space left on device")
    monkeypatch.undo()
    assert load_checkpoint_file(last)["global_step"] == 2  # the previous checkpoint, intact
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no half-written temp file


def test_disk_full_while_exporting_the_model_is_one_line(shapes_root, write_config, cli_main, tmp_path,
                                                         monkeypatch):
    import vlfuse.tasks.vqa.module

    def save_model_dir(*args, **kwargs):
        raise OSError(28, "No space left on device")

    out = tmp_path / "run"
    config = write_config(tmp_path / "tiny.yaml", shapes_root, out, "train.epochs=1")
    monkeypatch.setattr(vlfuse.tasks.vqa.module, "save_model_dir", save_model_dir)
    assert_one_line_error(cli_main("train", config), str(out / "model"), "No space left on device")


# --------------------------------------------------------------------------- #23.1: progress lines

def test_training_prints_progress_lines_with_eta(shapes_root, write_config, cli_main, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", shapes_root, tmp_path / "run", "train.progress_every_n_steps=2")
    result = cli_main("train", config)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == [f"{s}/{STEPS}" for s in (2, 4, 6, 8)]
    assert all("samples/s" in line and "ETA" in line for line in lines)
