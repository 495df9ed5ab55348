"""`vlfuse compare`: the leaderboard maths, and the whole command on the tiny dataset."""

from __future__ import annotations

import json

import pytest

from vlfuse.compare import RunSummary, fusion_config, leaderboard, plot_leaderboard, to_markdown


def _run(fusion: str, seed: int, overall: float, binary: float) -> RunSummary:
    metrics = {"overall": {"accuracy": overall}, "groups": {"binary": {"accuracy": binary}},
               "families": {"closest_shape": {"accuracy": binary}}}
    return RunSummary(fusion, seed, metrics, parameters=1000, train_seconds=10.0 + seed, steps=5,
                      ms_per_question=0.5)


def test_leaderboard_means_and_spreads_over_seeds_best_first():
    rows = leaderboard([_run("concat", 0, 0.5, 0.4), _run("concat", 1, 0.7, 0.6),
                        _run("cross_attention", 0, 0.9, 0.8), _run("cross_attention", 1, 0.9, 0.9)])
    assert [r["fusion"] for r in rows] == ["cross_attention", "concat"]
    concat = rows[1]
    assert concat["overall"]["mean"] == pytest.approx(0.6)
    assert concat["overall"]["std"] == pytest.approx(0.1414213, abs=1e-6)  # sample std of 0.5, 0.7
    assert concat["groups"]["binary"]["mean"] == pytest.approx(0.5)
    assert concat["train_seconds"] == pytest.approx(10.5) and concat["seeds"] == [0, 1]
    assert rows[0]["groups"]["binary"]["std"] == pytest.approx(0.0707107, abs=1e-6)


def test_markdown_and_chart(tmp_path):
    rows = leaderboard([_run("concat", 0, 0.5, 0.4), _run("gated", 0, 0.75, 0.5)])
    md = to_markdown(rows, "vlfuse compare c.yaml")
    assert "| gated | 75.0 ± 0.0 | 50.0 ± 0.0 | 1,000 |" in md
    assert "| closest_shape | 50.0 ± 0.0 | 40.0 ± 0.0 |" in md
    assert "    vlfuse compare c.yaml" in md
    png = plot_leaderboard(rows, tmp_path / "board.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_cut_before_its_planned_steps_is_marked_not_ranked_as_equal_work():
    cut = _run("gated", 0, 0.75, 0.5)
    cut.cut = True
    rows = leaderboard([_run("concat", 0, 0.5, 0.4), cut])
    assert [r["cut"] for r in rows] == [True, False]
    md = to_markdown(rows, "vlfuse compare c.yaml --max-minutes 3")
    assert "| 5 (cut) |" in md and "| 5 |" in md and "(cut): a run stopped before its planned steps" in md
    assert "(cut)" not in to_markdown(leaderboard([_run("concat", 0, 0.5, 0.4)]), "vlfuse compare c.yaml")


def test_fusion_config_changes_only_fusion_seed_budget_and_folder(tiny_config, shapes_root, tmp_path):
    base = tiny_config(shapes_root, tmp_path / "base")
    config = fusion_config(base, "concat", 5, 2.5, tmp_path / "x")
    assert config.model.fusion == {"name": "concat"} and config.seed == 5
    assert config.train.max_minutes == 2.5 and config.out_dir == str(tmp_path / "x")
    assert config.model.image_encoder == base.model.image_encoder and config.data == base.data
    same = fusion_config(base, base.model.fusion["name"], 0, None, tmp_path / "y")
    assert same.model.fusion == base.model.fusion  # the base's own settings are kept
    assert base.out_dir == str((tmp_path / "base").resolve())  # the base is not modified


def test_compare_cli_trains_each_fusion_and_seed_then_reuses_finished_runs(write_config, shapes_root, cli_main,
                                                                          tmp_path):
    config = write_config(tmp_path / "c.yaml", shapes_root, tmp_path / "unused", "train.epochs=1")
    out = tmp_path / "board"
    args = ["compare", config, "--fusions", "concat,similarity_attention", "--seeds", "2", "--out", out]
    result = cli_main(*args)
    assert result.returncode == 0, result.stderr
    assert "| fusion | overall %" in result.stdout and f"Leaderboard: {out / 'leaderboard.md'}" in result.stdout
    board = json.loads((out / "leaderboard.json").read_text())
    assert sorted(r["fusion"] for r in board["rows"]) == ["concat", "similarity_attention"]
    assert all(r["seeds"] == [0, 1] and r["parameters"] > 0 and r["ms_per_question"] > 0 for r in board["rows"])
    assert board["command"].startswith("vlfuse compare")
    assert (out / "leaderboard.png").is_file() and "![leaderboard](leaderboard.png)" in (out / "leaderboard.md").read_text()
    runs = sorted(p.parent.relative_to(out).as_posix() for p in out.glob("*/*/run.json"))
    assert runs == ["concat/seed0", "concat/seed1", "similarity_attention/seed0", "similarity_attention/seed1"]

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*/model/model.safetensors")}
    again = cli_main(*args)
    assert again.returncode == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished runs are read back, not retrained
    assert json.loads((out / "leaderboard.json").read_text())["rows"] == board["rows"]


def test_compare_unknown_fusion_is_one_line_error(write_config, shapes_root, cli_main, tmp_path):
    config = write_config(tmp_path / "c.yaml", shapes_root, tmp_path / "unused")
    result = cli_main("compare", config, "--fusions", "concat,nope", "--out", tmp_path / "b")
    assert result.returncode == 2
    assert "unknown fusion 'nope'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()  # validated before anything trains
