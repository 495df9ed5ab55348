"""Every shipped config budgets its training in work (epochs), not in wall-clock minutes.

The rule: a busy or slower machine must give the same model later, not a worse one. So each config
names `train.epochs` itself or through its `base:` (the dataclass default is nobody's decision), and a
`train.max_minutes` is only a safety cap: a file may set one only where a measured run of that config
exists, and then at least SAFETY_FACTOR times that run's training time. The measurements come from a
2-core machine shared with other jobs, already slow, so a cap three times above them cuts only a run
that is stuck or on a far slower machine; the 6-20 minute caps this replaced, set near the time the
run took, decided its length on a busy day. A config without a measured run ends on its epochs (and
Ctrl-C, which keeps a checkpoint for --resume).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vlfuse.config import load_yaml, read_config_file

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted([*(REPO / "configs").rglob("*.yaml"), *(REPO / "src" / "vlfuse" / "configs").rglob("*.yaml")])
SAFETY_FACTOR = 3

# Training minutes of the run behind each config's published number (where the docs give them).
MEASURED_MINUTES = {
    "configs/vqa_shapes.yaml": 21.2,  # docs/results.md: 1,274 s of training (2,256 steps), one thread
    "configs/vqa_mc_shapes.yaml": 16.2,  # docs/tasks/vqa_mc.md: 969 s of training
    "configs/generation_shapes.yaml": 41.7,  # docs/tasks/generation.md: 2,500 s of training, two threads
    "src/vlfuse/configs/demo.yaml": 7.2,  # docs/results.md: 429 s of training (1,356 steps) from a fresh clone
}


def _name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _own_cap(path: Path) -> float | None:
    """The max_minutes this file itself sets (not one it inherits: the file that sets a cap answers for it)."""
    raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    return (raw.get("train") or {}).get("max_minutes")


def test_the_shipped_configs_are_found():
    names = {_name(p) for p in SHIPPED}
    assert {"configs/vqa_shapes.yaml", "configs/fusions/concat.yaml", "src/vlfuse/configs/demo.yaml"} <= names
    assert set(MEASURED_MINUTES) <= names  # a renamed config takes its measurement along


@pytest.mark.parametrize("path", SHIPPED, ids=_name)
def test_every_shipped_config_budgets_in_epochs(path):
    epochs = (read_config_file(path).get("train") or {}).get("epochs")
    assert isinstance(epochs, int) and epochs >= 1, f"{_name(path)}: set train.epochs (the work budget)"


def cap_problem(name: str, cap: float | None) -> str | None:
    """Why a cap of `cap` minutes set in config `name` is not a safety cap, or None when it is one."""
    if cap is None:
        return None
    measured = MEASURED_MINUTES.get(name)
    if measured is None:
        return f"{name}: train.max_minutes={cap} with no measured run: remove it, or record the run in MEASURED_MINUTES"
    if cap < SAFETY_FACTOR * measured:
        return f"{name}: train.max_minutes={cap} is under {SAFETY_FACTOR}x the {measured} minutes the run took"
    return None


@pytest.mark.parametrize("path", SHIPPED, ids=_name)
def test_a_time_cap_is_only_a_safety_cap(path):
    problem = cap_problem(_name(path), _own_cap(path))
    assert problem is None, problem


def test_the_rule_refuses_a_cap_near_the_run_time(monkeypatch):
    """The check itself: a 9-minute cap on a run measured at 8 minutes is a budget in disguise."""
    monkeypatch.setitem(MEASURED_MINUTES, "configs/tight.yaml", 8.0)
    assert "under 3x the 8.0 minutes" in cap_problem("configs/tight.yaml", 9)
    assert cap_problem("configs/tight.yaml", 24) is None
    assert "no measured run" in cap_problem("configs/unmeasured.yaml", 600)
    assert cap_problem("configs/unmeasured.yaml", None) is None
