"""Lightning checkpoints stored as safetensors: exact round trip, refusals, damaged files, no pickle."""

from __future__ import annotations

import json
import math
import pickle
import struct
from pathlib import Path

import pytest
import torch

from vlfuse.errors import DataError, VLFuseError
from vlfuse.train.checkpoint_io import SafetensorsCheckpointIO, load_checkpoint_file, save_checkpoint_file


def lightning_like_checkpoint() -> dict:
    """The shape of a real Lightning checkpoint, with every kind of leaf the format must keep."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 3, generator=g)
    return {
        "epoch": 1,
        "global_step": 10,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": {
            "model.linear.weight": weight,
            "model.linear.bias": torch.randn(4, generator=g),
            "model.half": torch.randn(2, 2, generator=g).half(),
            "model.bf16": torch.randn(3, generator=g).bfloat16(),
            "model.f64": torch.randn(2, generator=g).double(),
            "model.ids": torch.arange(5, dtype=torch.int64),
            "model.i32": torch.tensor([-3, 7], dtype=torch.int32),
            "model.u8": torch.tensor([[0, 255], [7, 8]], dtype=torch.uint8),
            "model.mask": torch.tensor([True, False, True]),
            "model.scalar": torch.tensor(2.5),
            "model.empty": torch.zeros(0, 3),
            "model.transposed": weight.t(),  # a non-contiguous view of another tensor's storage
        },
        "optimizer_states": [{
            # Optimizer state is keyed by parameter index: int keys, which JSON objects cannot hold.
            "state": {
                0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4, 3, generator=g),
                    "exp_avg_sq": torch.rand(4, 3, generator=g)},
                1: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4, generator=g),
                    "exp_avg_sq": torch.rand(4, generator=g)},
            },
            "param_groups": [
                {"params": [0], "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01,
                 "amsgrad": False, "foreach": None, "maximize": False, "initial_lr": 0.001},
                {"params": [1], "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                 "amsgrad": False, "foreach": None, "maximize": False, "initial_lr": 0.001},
            ],
        }],
        "lr_schedulers": [{"base_lrs": [0.001, 0.001], "last_epoch": 10, "_step_count": 11,
                           "_last_lr": [0.0005, 0.0005], "lr_lambdas": [None]}],
        "callbacks": {
            "ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 1}": {
                "monitor": None, "best_model_score": None, "best_model_path": "", "kth_best_model_path": "",
                "kth_value": torch.tensor(float("inf")), "best_k_models": {}, "last_model_path": "/r/last.ckpt",
                "dirpath": "/r/checkpoints",
            },
        },
        "loops": {"fit_loop": {"state_dict": {}, "epoch_loop.batch_progress": {
            "total": {"ready": 2, "completed": 1, "started": 2, "processed": 2}, "is_last_batch": False}}},
        "hparams": {"inf": float("inf"), "neg_inf": float("-inf"), "tiny": 5e-324, "big": 2**62,
                    "negative": -7, "text": "ünïcode 中文 \"quoted\" \n newline", "empty": "",
                    "nested": [[1, [2.5, None]], [], ["a", ("b", 3)]], "flag": True,
                    "__tensor__": "a key that looks like a tag", "mixed_keys": {1: "one", "1": "string one",
                                                                                   (2, "x"): "tuple key"}},
    }


def assert_same(a, b, where: str = "checkpoint") -> None:
    """Structural equality that also checks container types, key types and tensor dtypes/shapes."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        assert torch.equal(a, b), f"{where}: tensor values differ"
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_round_trip_keeps_structure_types_and_tensors(tmp_path):
    original = lightning_like_checkpoint()
    path = tmp_path / "ckpt" / "last.ckpt"  # the parent folder is created
    save_checkpoint_file(original, path)
    loaded = load_checkpoint_file(path)
    assert_same(original, loaded)
    # Spot checks of the parts a naive JSON encoding would break.
    assert set(loaded["optimizer_states"][0]["state"]) == {0, 1}
    assert loaded["optimizer_states"][0]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert loaded["hparams"]["inf"] == math.inf and loaded["hparams"]["neg_inf"] == -math.inf
    assert loaded["hparams"]["mixed_keys"][(2, "x")] == "tuple key"
    assert loaded["state_dict"]["model.bf16"].dtype == torch.bfloat16
    assert loaded["state_dict"]["model.transposed"].is_contiguous()


def test_nan_survives(tmp_path):
    save_checkpoint_file({"x": float("nan"), "t": torch.tensor([float("nan"), 1.0])}, tmp_path / "n.ckpt")
    loaded = load_checkpoint_file(tmp_path / "n.ckpt")
    assert math.isnan(loaded["x"])
    assert torch.isnan(loaded["t"][0]) and loaded["t"][1] == 1.0


def test_tensors_are_detached_copies(tmp_path):
    param = torch.nn.Parameter(torch.ones(3))
    buffer = torch.zeros(2)
    save_checkpoint_file({"p": param, "b": buffer}, tmp_path / "c.ckpt")
    buffer += 5  # changing the source after saving does not change the file
    loaded = load_checkpoint_file(tmp_path / "c.ckpt")
    assert not loaded["p"].requires_grad
    assert torch.equal(loaded["b"], torch.zeros(2))


def test_path_values_are_stored_as_strings(tmp_path):
    save_checkpoint_file({"dirpath": Path("/a/b")}, tmp_path / "c.ckpt")
    assert load_checkpoint_file(tmp_path / "c.ckpt") == {"dirpath": "/a/b"}


@pytest.mark.parametrize("bad", [object(), {1, 2}, b"bytes", 1 + 2j, torch.device("cpu")],
                         ids=["object", "set", "bytes", "complex", "device"])
def test_unsupported_objects_are_refused(tmp_path, bad):
    path = tmp_path / "c.ckpt"
    with pytest.raises(TypeError, match="cannot store"):
        save_checkpoint_file({"state": {"nested": [1, bad]}}, path)
    assert not path.exists() and not list(tmp_path.iterdir()), "a refused save must leave no file behind"


def test_refused_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    save_checkpoint_file({"global_step": 1}, path)
    with pytest.raises(TypeError):
        save_checkpoint_file({"global_step": 2, "bad": object()}, path)
    assert load_checkpoint_file(path) == {"global_step": 1}


def test_missing_file_raises_data_error_naming_the_path(tmp_path):
    path = tmp_path / "nowhere" / "last.ckpt"
    with pytest.raises(DataError, match="not found") as exc:
        load_checkpoint_file(path)
    assert str(path) in str(exc.value)


def test_random_bytes_raise_data_error_naming_the_path(tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1),
                                   dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(DataError) as exc:
        load_checkpoint_file(path)
    assert str(path) in str(exc.value)


def test_truncated_checkpoint_raises_data_error(tmp_path):
    path = tmp_path / "last.ckpt"
    save_checkpoint_file(lightning_like_checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as exc:
        load_checkpoint_file(path)
    assert str(path) in str(exc.value)


def test_empty_file_raises_data_error(tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"")
    with pytest.raises(DataError) as exc:
        load_checkpoint_file(path)
    assert str(path) in str(exc.value)


def test_plain_safetensors_file_without_our_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(DataError, match="metadata") as exc:
        load_checkpoint_file(path)
    assert str(path) in str(exc.value)


def _rewrite_metadata(path: Path, value: str) -> None:
    """Replace our metadata entry in a safetensors file, keeping the file otherwise valid."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header["__metadata__"]["vlfuse_checkpoint"] = value
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n:])


def test_damaged_metadata_raises_data_error(tmp_path):
    path = tmp_path / "last.ckpt"
    save_checkpoint_file({"w": torch.ones(2), "step": 3}, path)
    _rewrite_metadata(path, '{"__dict__": {"w": {"__tensor__": "t0"}, "step": 3')  # cut short
    with pytest.raises(DataError) as exc:
        load_checkpoint_file(path)
    assert str(path) in str(exc.value)


def test_file_is_plain_safetensors_and_loads_without_unpickling(tmp_path, monkeypatch):
    from safetensors import safe_open

    path = tmp_path / "last.ckpt"
    original = lightning_like_checkpoint()
    save_checkpoint_file(original, path)
    data = path.read_bytes()
    assert not data.startswith(b"PK") and not data.startswith(b"\x80"), "looks like a torch.save/pickle file"
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])  # safetensors: u64 header length, then a JSON header
    assert "vlfuse_checkpoint" in header["__metadata__"]
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        skeleton = json.loads(f.metadata()["vlfuse_checkpoint"])
        tensors = {k: f.get_tensor(k) for k in keys}
    n_tensors = (len(original["state_dict"]) + 6 + 1)  # state_dict + optimizer moments/steps + kth_value
    assert len(keys) == n_tensors
    assert skeleton["__dict__"]["global_step"] == 10
    assert any(torch.equal(t, original["state_dict"]["model.linear.weight"]) for t in tensors.values())

    def no_unpickling(*args, **kwargs):
        raise AssertionError("loading a checkpoint must not unpickle anything")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    assert_same(original, load_checkpoint_file(path))


def test_checkpoint_io_plugin(tmp_path):
    io = SafetensorsCheckpointIO()
    path = tmp_path / "sub" / "epoch=0.ckpt"
    io.save_checkpoint({"global_step": 4, "state_dict": {"w": torch.arange(3.0)}}, path)
    loaded = io.load_checkpoint(path, map_location=torch.device("cpu"))
    assert loaded["global_step"] == 4 and torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))
    assert io.load_checkpoint(path, map_location=lambda storage, loc: storage)["global_step"] == 4
    io.remove_checkpoint(path)
    assert not path.exists()
    io.remove_checkpoint(path)  # removing twice is fine
    with pytest.raises(VLFuseError):
        io.load_checkpoint(path)
