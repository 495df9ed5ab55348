"""`vlfuse train` end to end on real data: a handful of NLVR (v1) dev scenes, the tiny model, one epoch.

The statements are a few lines of the real dev.json (written to a temporary file); the images are
read in place from ../shared/data, never copied. Skips in a clone without that folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NLVR_DEV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nlvr-dev"


def test_cli_train_on_real_nlvr(cli, write_config, tmp_path):
    if not (NLVR_DEV / "dev.json").is_file():
        pytest.skip(f"NLVR dev set not found at {NLVR_DEV} (only present in the dev/CI checkout)")
    lines = (NLVR_DEV / "dev.json").read_text(encoding="utf-8").splitlines()
    (tmp_path / "train.json").write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")  # 4 statements, 24 images
    (tmp_path / "test.json").write_text("\n".join(lines[4:6]) + "\n", encoding="utf-8")  # 2 statements, 12 images
    images = NLVR_DEV / "images"
    config = write_config(tmp_path / "nlvr.yaml", tmp_path, tmp_path / "run", "data.format=nlvr", "train.epochs=1",
                          f"data.train={{path: train.json, images: '{images}'}}",
                          f"data.val={{path: test.json, images: '{images}'}}",
                          f"data.test={{path: test.json, images: '{images}'}}")
    result = cli("train", config)
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((tmp_path / "run" / "eval.json").read_text(encoding="utf-8"))
    assert metrics["overall"]["count"] == 12 and 0 <= metrics["overall"]["accuracy"] <= 1
    assert set(metrics["families"]) == {"nlvr"} and metrics["skipped"]["count"] == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    assert run["train"]["images"] == 24 and run["epochs_completed"] == 1
    answers = json.loads((tmp_path / "run" / "model" / "answers.json").read_text(encoding="utf-8"))
    assert sorted(answers) == ["false", "true"]
