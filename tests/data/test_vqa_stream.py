"""Task vqa streamed from tar shards (data.stream): every image once per epoch across workers, equal
slots for DDP, a mid-epoch resume that continues where the stream stopped, and training end to end."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from helpers import read_json
from vlfuse.data.answers import AnswerVocab
from vlfuse.data.loading import read_split
from vlfuse.data.shards import write_shards
from vlfuse.data.tokenizer import build_tokenizer
from vlfuse.data.vqa_dataset import collate_groups
from vlfuse.data.vqa_stream import StreamedVQADataset, items_per_slot
from vlfuse.errors import ConfigError

STREAM = ("data.format=webdataset", "data.train={path: train}", "data.val={path: val}", "data.test={path: test}",
          "data.stream=true", "data.shuffle_buffer=4")


@pytest.fixture(scope="module")
def shard_root(shapes_root, tmp_path_factory):
    """The tiny shapes splits as shards of 3 images (train: 14 images -> 5 shards)."""
    from conftest import BASE_CONFIG, tiny_overrides
    from vlfuse.config import load_config

    root = tmp_path_factory.mktemp("stream_shards")
    config = load_config(BASE_CONFIG, tiny_overrides(shapes_root, root / "unused"))
    for split in ("train", "val", "test"):
        write_shards(read_split(config.data, split).samples, root / split, prefix=split, max_samples_per_shard=3)
    return root


def stream_config(tiny_config, shard_root, out, *extra):
    return tiny_config(shard_root, out, *STREAM, *extra)


def streamed(config, **kwargs) -> StreamedVQADataset:
    samples = read_split(config.data, "train").samples
    tokenizer = build_tokenizer(s.question for s in samples)
    answers = AnswerVocab.build((s.answer for s in samples), 100)
    args = dict(batch_size=2, shuffle_buffer=4, seed=0) | kwargs
    return StreamedVQADataset(samples, tokenizer, answers, 32, 16, **args)


def keys(loader) -> list[str]:
    return [sample.image_path.name for batch in loader for sample in batch["samples"][:: 4]]


def test_items_per_slot_fits_the_fullest_slot_in_whole_batches():
    assert items_per_slot([3, 3, 3, 3, 2], slots=2, batch_size=2) == 10  # 3 shards of 3 -> 9 -> 5 batches
    assert items_per_slot([3, 3, 3, 3, 2], slots=5, batch_size=1) == 3
    assert items_per_slot([5], slots=4, batch_size=2) == 2  # one shard shared sample by sample: ceil(5/4)
    assert items_per_slot([8, 1], slots=1, batch_size=4) == 12


def test_every_image_streams_each_epoch_across_two_workers_in_equal_batches(tiny_config, shard_root, tmp_path):
    dataset = streamed(stream_config(tiny_config, shard_root, tmp_path), workers=2)
    assert dataset.num_images == 14 and len(dataset.shards) == 5
    loader = DataLoader(dataset, batch_size=2, collate_fn=collate_groups, num_workers=2)
    epoch0 = keys(loader)
    assert len(list(loader)) == dataset.batches_per_rank == len(loader) == 10
    counts = Counter(epoch0)
    assert len(counts) == 14 and sum(counts.values()) == 20  # every image; slots pad by repeating their own
    assert dataset.summary()["repeated_per_epoch"] == 6
    batch = next(iter(loader))
    assert batch["images"].dtype == torch.uint8 and batch["images"].shape == (2, 3, 32, 32)
    assert batch["input_ids"].shape[0] == batch["labels"].shape[0] == batch["image_index"].shape[0] == 8
    assert keys(loader) == epoch0  # same epoch, same order
    dataset.set_epoch(1)
    assert keys(loader) != epoch0 and set(keys(loader)) == set(counts)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_skips_exactly_the_batches_already_trained(tiny_config, shard_root, tmp_path, workers):
    dataset = streamed(stream_config(tiny_config, shard_root, tmp_path), workers=workers)
    dataset.set_epoch(3)
    loader = DataLoader(dataset, batch_size=2, collate_fn=collate_groups, num_workers=workers)
    full = [[s.question_id for s in batch["samples"]] for batch in loader]
    for done in (1, 3, 4):
        dataset.resume_batches = done
        assert [[s.question_id for s in batch["samples"]] for batch in loader] == full[done:]


def test_processes_split_the_shards_and_take_the_same_number_of_batches(tiny_config, shard_root, tmp_path):
    config = stream_config(tiny_config, shard_root, tmp_path)
    seen = []
    for rank in range(2):
        dataset = streamed(config)
        dataset.place(rank, 2)
        batches = list(DataLoader(dataset, batch_size=2, collate_fn=collate_groups))
        assert len(batches) == dataset.batches_per_rank == 5
        seen.append({s.image_path for b in batches for s in b["samples"]})
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 14


def test_images_left_out_of_training_are_not_streamed(tiny_config, shard_root, tmp_path):
    from vlfuse.data.subsample import sample_images

    config = stream_config(tiny_config, shard_root, tmp_path)
    kept = sample_images(read_split(config.data, "train").samples, 0.5, 0)
    tokenizer = build_tokenizer(s.question for s in kept)
    dataset = StreamedVQADataset(kept, tokenizer, AnswerVocab.build((s.answer for s in kept), 100), 32, 16, batch_size=1)
    streamed_paths = {group.image_path for _, group in dataset}
    assert streamed_paths == {s.image_path for s in kept} and len(streamed_paths) == 7


def test_training_streams_from_shards_and_evaluates(tiny_config, shard_root, tmp_path):
    from vlfuse.tasks import train

    result = train(stream_config(tiny_config, shard_root, tmp_path / "run"), progress=False)
    summary = read_json(tmp_path / "run" / "run.json")
    assert summary["train"]["images"] == 14 and summary["train"]["questions"] == 56
    assert summary["train"]["stream"] == {"shards": 5, "slots": 1, "items_per_slot": 14, "repeated_per_epoch": 0}
    assert summary["steps"] == 2 * 4  # 14 images in batches of 4 (the tiny config's batch_images), 2 epochs
    assert result.test_metrics["overall"]["count"] == 4


def test_an_interrupted_streamed_run_resumes_to_the_weights_of_an_uninterrupted_one(tiny_config, shard_root,
                                                                                   tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from vlfuse.tasks.vqa.module import VQAModule
    from vlfuse.tasks import train

    extra = ("train.num_workers=2",)  # the tiny config: 2 epochs of 4 batches, a checkpoint every step
    reference = train(stream_config(tiny_config, shard_root, tmp_path / "reference", *extra), progress=False)
    step = VQAModule.training_step

    def crash_at_step_8(self, batch, batch_idx):
        if self.global_step == 8:  # epoch 1 (2 workers x 3 batches per epoch), its third batch
            raise RuntimeError("simulated crash")
        return step(self, batch, batch_idx)

    config = stream_config(tiny_config, shard_root, tmp_path / "run", *extra)
    monkeypatch.setattr(VQAModule, "training_step", crash_at_step_8)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, progress=False)
    monkeypatch.setattr(VQAModule, "training_step", step)
    resumed = train(config, resume=True, progress=False)
    assert read_json(tmp_path / "run" / "run.json")["steps"] == read_json(tmp_path / "reference" / "run.json")["steps"]
    ours, theirs = (load_file(str(r.model_dir / "model.safetensors")) for r in (resumed, reference))
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-6, rtol=0) for k in theirs)


@pytest.mark.parametrize("extra, message", [
    (("data.format=vqa_v2",), "data.stream' streams tar shards"),
    (("data.feature_cache=cache",), "exclude each other"),
    (("data.shuffle_buffer=-1",), "shuffle_buffer' must be >= 0"),
])
def test_stream_config_mistakes_are_named(tiny_config, shard_root, tmp_path, extra, message):
    from vlfuse.tasks import train

    with pytest.raises(ConfigError, match=message):
        train(stream_config(tiny_config, shard_root, tmp_path / "run", *extra), progress=False)


def test_a_stream_of_plain_image_files_is_refused(tiny_config, shapes_root, tmp_path):
    config = tiny_config(shapes_root, tmp_path)
    with pytest.raises(Exception, match="plain file"):
        streamed(config)


@pytest.mark.slow
def test_ddp_two_processes_stream_two_workers_each(cli, shard_root, write_config, tmp_path):
    config = write_config(tmp_path / "stream.yaml", shard_root, tmp_path / "run", *STREAM, "train.num_workers=2")
    result = cli("train", config, "--set", "train.accelerator=cpu", "--set", "train.devices=2", "--set",
                 "train.strategy=ddp", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    run = read_json(tmp_path / "run" / "run.json")
    # 4 slots (2 processes x 2 workers) over 5 shards: at most 2 shards (6 images) each -> 8 items in
    # whole batches of 4 -> 2 batches per worker, 4 per process per epoch, 2 epochs
    assert run["train"]["stream"] == {"shards": 5, "slots": 4, "items_per_slot": 8, "repeated_per_epoch": 18}
    assert run["steps"] == 8 and run["interrupted"] is False
    assert read_json(tmp_path / "run" / "eval.json")["overall"]["count"] == 4


@pytest.mark.parametrize("policy", ["skip", "error"])
def test_an_image_that_fails_to_decode_is_named_and_skipped_or_stops(tiny_config, shard_root, tmp_path, monkeypatch,
                                                                    capsys, policy):
    from vlfuse.data import images
    from vlfuse.errors import DataError

    decode = images.load_image_bytes

    def broken_second(data, *, name="<upload>", **kwargs):
        if name.endswith("000000001.png"):
            raise DataError("cannot decode image (truncated)", path=name)
        return decode(data, name=name, **kwargs)

    monkeypatch.setattr(images, "load_image_bytes", broken_second)
    dataset = streamed(stream_config(tiny_config, shard_root, tmp_path), shuffle_buffer=0, on_bad_sample=policy)
    if policy == "error":
        with pytest.raises(DataError, match="000000001.png"):
            list(dataset)
        return
    assert len({group.image_path for _, group in dataset}) == 13
    assert "train-000000.tar/000000001.png" in capsys.readouterr().err
