"""Which member task trains at each step: round-robin, or drawn with fixed shares from (seed, step) alone,
so a resumed run (or any process of a distributed one) takes the batches the interrupted one would have."""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError


def task_shares(sizes: list[int], schedule: str, temperature: float = 1.0) -> list[float]:
    """Each member's expected share of the steps. round_robin: equal; proportional: n_t / sum n;
    temperature: n_t^(1/T) / sum n^(1/T) (T = 1 is proportional, a large T tends to equal shares)."""
    if schedule == "round_robin":
        return [1 / len(sizes)] * len(sizes)
    if schedule not in ("proportional", "temperature"):
        raise ConfigError(f"config key 'multitask.schedule' must be round_robin, proportional or temperature, "
                          f"got {schedule!r}")
    power = 1.0 if schedule == "proportional" else 1.0 / temperature
    weights = [float(n) ** power for n in sizes]
    total = sum(weights)
    return [w / total for w in weights]


class Schedule:
    """step -> (member index, how many of that member's batches earlier steps took)."""

    def __init__(self, sizes: list[int], schedule: str, temperature: float, seed: int):
        self.kind, self.seed, self.members = schedule, seed, len(sizes)
        self.shares = task_shares(sizes, schedule, temperature)
        self._drawn: list[tuple[int, int]] = []  # (member, its batch count) of steps 0, 1, ... drawn so far
        self._taken = [0] * len(sizes)

    def draw(self, step: int) -> int:
        """The member of `step` under a drawn schedule: a function of (seed, step) only."""
        return int(np.random.default_rng([self.seed, step]).choice(self.members, p=self.shares))

    def position(self, step: int) -> tuple[int, int]:
        if self.kind == "round_robin":
            return step % self.members, step // self.members
        while len(self._drawn) <= step:  # counting needs every earlier step: draw them once, in order
            member = self.draw(len(self._drawn))
            self._drawn.append((member, self._taken[member]))
            self._taken[member] += 1
        return self._drawn[step]

    def task(self, step: int) -> int:
        return self.position(step)[0]
