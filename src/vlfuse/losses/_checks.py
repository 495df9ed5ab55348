"""Input checks shared by the losses: a wrong shape should fail here, with names, not deep in a matmul."""

from __future__ import annotations

import torch


def check_rows(name: str, x: torch.Tensor, dim: int = 2) -> None:
    """x has `dim` dimensions and at least one row."""
    if x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")


def check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape")


def check_square(name: str, x: torch.Tensor) -> None:
    check_rows(name, x)
    if x.shape[0] != x.shape[1]:
        raise ValueError(f"{name} must be square [B, B] (pair i is (image i, text i)), got {tuple(x.shape)}")


def check_mask(name: str, mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A mask of exactly `shape`, returned as bool."""
    if mask.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")
    return mask.bool()


def zero_loss(like: torch.Tensor) -> torch.Tensor:
    """A 0 that stays connected to the graph, so backward() works when nothing was selected."""
    return like.sum() * 0.0
