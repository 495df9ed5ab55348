"""Assertions, readers and small test doubles shared by the test files (imported as `helpers`:
tests/conftest.py puts tests/ on the path, so a test file in any folder can import it, even alone)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from vlfuse.types import Features, grid_boxes


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def assert_one_line_error(result, *culprits: str) -> str:
    """Exit 2, exactly one non-empty line on stderr, starting 'error:', naming every culprit."""
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, everything
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, everything)
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for culprit in culprits:
        assert culprit in lines[0], f"{culprit!r} not named in: {lines[0]}"
    return lines[0]


def write_yaml(path: Path, config) -> Path:
    """A loaded config written back as YAML, for the CLI to read."""
    import yaml

    from vlfuse.config import to_dict

    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
    return path


class TinyFrozenEncoder(nn.Module):
    """A cacheable encoder small enough for tests: a fixed strided conv (the frozen part) + a projection."""

    backbone_calls = 0

    def __init__(self, dim: int = 8, image_size: int = 32, freeze: bool = True, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.backbone = nn.Conv2d(3, 6, kernel_size=8, stride=8)
            self.proj = nn.Linear(6, dim)
        self.frozen = freeze
        self.backbone.requires_grad_(not freeze)

    def frozen_features(self, images: torch.Tensor) -> torch.Tensor:
        TinyFrozenEncoder.backbone_calls += 1
        return self.backbone(images)

    def from_frozen(self, grid: torch.Tensor) -> Features:
        b, _, rows, cols = grid.shape
        tokens = self.proj(grid.flatten(2).transpose(1, 2))
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
        return Features(tokens, mask, tokens.mean(1), grid_boxes(rows, cols, b))

    def forward(self, images: torch.Tensor) -> Features:
        return self.from_frozen(self.frozen_features(images))

    def frozen_fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name, tensor in sorted(self.backbone.state_dict().items()):
            digest.update(name.encode() + tensor.numpy().tobytes())
        return digest.hexdigest()


# --------------------------------------------------------------------------- the HTTP server

QUESTION = "What is the shape of the red object?"


def make_client(model_dirs, index=None, **settings):
    """A TestClient of the real app serving `model_dirs` (and `index`) with these ServeSettings."""
    from vlfuse.serve import ServeSettings, Service, create_app

    return local_client(create_app(Service.load(list(model_dirs), index, ServeSettings(**settings))))


def local_client(app):
    # as a browser on this machine would call it (TestClient's own host name, "testserver", is refused)
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://127.0.0.1")


def upload(data: bytes, name: str = "image.png", kind: str = "image/png") -> dict:
    return {"image": (name, data, kind)}


def assert_json_error(response, status: int, *words: str) -> str:
    """The response has this status and a JSON body {error, kind} whose error names every word."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error", "kind"}, body
    for word in words:
        assert word in body["error"], (word, body["error"])
    return body["error"]


def count_forward_calls(service) -> list[int]:
    """The batch size of each forward pass of the service's VQA model, from now on."""
    calls = []
    service.vqa.model.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    return calls
