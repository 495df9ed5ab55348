"""Object-level faithfulness of a generated scene to its caption (the field's way when the truth is known).

The caption names every object: "a red circle at the top left, a green square in the centre, ...".
`read_caption` turns it into NamedObjects; `read_image` finds the objects an image shows with the
project's region proposer (`vlfuse.encoders.regions.find_regions`: pixels that differ from the
background, grouped into connected components) and names each one's colour (the nearest palette
colour to its mean), shape (how much of its box it fills: a square ~1.0, a circle ~0.79, a triangle
~0.5) and place on the caption's 3x3 grid (its box centre). `score` matches the two one to one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ...data.scene import COLORS, PLACES as SCENE_PLACES, SHAPES
from ...encoders.regions import find_regions

PLACES = {place: (row, col) for row, places in enumerate(SCENE_PLACES["en"]) for col, place in enumerate(places)}
_PHRASE = re.compile(rf"^an? ({'|'.join(COLORS)}) ({'|'.join(SHAPES)}) ({'|'.join(PLACES)})$")
_PALETTE = torch.tensor(list(COLORS.values()), dtype=torch.float32) / 255
# Fill of the box on rendered scenes: triangle 0.51-0.63, circle 0.67-0.87, square 1.0; cut between.
_TRIANGLE_BELOW, _SQUARE_FROM = 0.645, 0.93
# Box centres this close (px) to a grid line count for either cell: the caption's own rounding of
# a centre at 21.3 px, and the pixel grid, make a closer call meaningless.
_BORDER_PX = 1.0


@dataclass(frozen=True)
class NamedObject:
    color: str
    shape: str
    row: int
    col: int


@dataclass(frozen=True)
class FoundObject:
    color: str
    shape: str
    x: float  # box centre, pixels
    y: float
    fill: float

    def cells(self, size: int) -> set[tuple[int, int]]:
        """The grid cells (row, col) this centre may be called: one, or two or four at a grid line."""
        def near(v: float) -> set[int]:
            return {min(2, max(0, int((v + d) * 3 // size))) for d in (-_BORDER_PX, 0.0, _BORDER_PX)}
        return {(r, c) for r in near(self.y) for c in near(self.x)}


def read_caption(text: str) -> list[NamedObject]:
    """The objects an English shapes caption names; ValueError naming the phrase it cannot read."""
    objects = []
    for phrase in text.strip().rstrip(".").split(", "):
        match = _PHRASE.match(phrase.strip())
        if match is None:
            raise ValueError(f"not a shapes caption phrase: {phrase!r}")
        color, shape, place = match.groups()
        objects.append(NamedObject(color, shape, *PLACES[place]))
    return objects


def _shape_of(fill: float) -> str:
    return "triangle" if fill < _TRIANGLE_BELOW else "circle" if fill < _SQUARE_FROM else "square"


def read_images(images: torch.Tensor, max_objects: int = 12) -> list[list[FoundObject]]:
    """The objects in each of images [B, 3, H, W] (float in [0, 1] or uint8)."""
    if images.dtype == torch.uint8:
        images = images.float() / 255
    b, _, h, w = images.shape
    regions = find_regions(images, max_regions=max_objects)
    found = []
    for i in range(b):
        objects = []
        for k in torch.nonzero(regions.mask[i] & (regions.areas[i] < 0.5)).flatten().tolist():  # not "whole image"
            x0, y0, x1, y1 = (regions.boxes[i, k] * torch.tensor([w, h, w, h])).tolist()
            fill = float(regions.areas[i, k]) * h * w / max(1.0, (x1 - x0) * (y1 - y0))
            color = list(COLORS)[int(((_PALETTE - regions.colors[i, k]) ** 2).sum(-1).argmin())]
            objects.append(FoundObject(color, _shape_of(fill), (x0 + x1) / 2, (y0 + y1) / 2, fill))
        found.append(objects)
    return found


def match(named: list[NamedObject], found: list[FoundObject], size: int) -> list[FoundObject | None]:
    """For each named object, the found object that shows it (colour, shape and cell right), each used once."""
    used: set[int] = set()
    out: list[FoundObject | None] = []
    for n in named:
        hit = next((j for j, f in enumerate(found) if j not in used and f.color == n.color and f.shape == n.shape
                    and (n.row, n.col) in f.cells(size)), None)
        if hit is not None:
            used.add(hit)
        out.append(None if hit is None else found[hit])
    return out


def score(named_lists: list[list[NamedObject]], found_lists: list[list[FoundObject]], size: int) -> dict:
    """Precision / recall of objects (colour, shape and place all right), per-attribute rates among the
    named objects whose colour is found, and the share of images with every object right and nothing else."""
    named_total = found_total = correct = color_found = shape_right = place_right = exact = 0
    for named, found in zip(named_lists, found_lists, strict=True):
        matched = match(named, found, size)
        hits = sum(m is not None for m in matched)
        named_total, found_total, correct = named_total + len(named), found_total + len(found), correct + hits
        exact += hits == len(named) == len(found)
        for n in named:
            same_color = [f for f in found if f.color == n.color]
            color_found += bool(same_color)
            shape_right += any(f.shape == n.shape for f in same_color)
            place_right += any((n.row, n.col) in f.cells(size) for f in same_color)
    recall, precision = correct / max(1, named_total), correct / max(1, found_total)
    return {
        "objects_named": named_total, "objects_found": found_total, "objects_correct": correct,
        "recall": recall, "precision": precision,
        "f1": 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision),
        "color_present": color_found / max(1, named_total), "shape_right": shape_right / max(1, named_total),
        "place_right": place_right / max(1, named_total), "images_exact": exact / max(1, len(named_lists)),
        "images": len(named_lists),
    }
