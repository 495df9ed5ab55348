"""The built-in shapes scene: its objects, colours and shapes, and the constants its text shares.

Both generators read it: the questions and captions (data/shapes.py) and the dialogues
(data/shapes_dialog.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from vlfuse.errors import ConfigError

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 200, 0),
    "blue": (0, 0, 255),
    "orange": (255, 150, 0),
    "gray": (128, 128, 128),
    "yellow": (255, 255, 0),
}
SHAPES = ("circle", "square", "triangle")
# Caption positions on a 3x3 grid, indexed [row][column].
PLACES = {
    "en": (("at the top left", "at the top", "at the top right"),
           ("on the left", "in the centre", "on the right"),
           ("at the bottom left", "at the bottom", "at the bottom right")),
    "zh": (("左上方", "上方", "右上方"), ("左边", "中间", "右边"), ("左下方", "下方", "右下方")),
}

MARGIN = 0.03          # distance comparisons closer than this fraction of the size are ambiguous


@dataclass(frozen=True)
class ShapeObject:
    color: str
    shape: str
    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class Scene:
    size: int
    objects: tuple[ShapeObject, ...]

    def obj(self, color: str) -> ShapeObject:
        for o in self.objects:
            if o.color == color:
                return o
        raise ConfigError(f"colors: the scene has no {color!r} object")
