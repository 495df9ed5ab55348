"""WebDataset-style tar shards: written from a configured split, read back exactly, streamed once
per epoch across workers and ranks, bad members named, and usable as a config data format."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from vlfuse.data.images import load_image
from vlfuse.data.shards import ShardStream, expand_braces, list_shards, read_shard_samples, split_key, write_shards
from vlfuse.errors import DataError
from conftest import REPO


def split_samples(tiny_config, shapes_root, tmp_path, split="train", *extra):
    from vlfuse.data.loading import read_split

    return read_split(tiny_config(shapes_root, tmp_path / "unused", *extra).data, split).samples


def caption_config(shapes_root, tmp_path):
    from vlfuse.config import load_config

    return load_config(REPO / "configs" / "retrieval_shapes.yaml", [f"data.root={shapes_root}",
                                                                    f"out_dir={tmp_path / 'unused'}"])


@pytest.fixture
def vqa_shards(shapes_root, tiny_config, tmp_path):
    samples = split_samples(tiny_config, shapes_root, tmp_path)
    manifest = write_shards(samples, tmp_path / "shards", prefix="train", max_samples_per_shard=4)
    return samples, tmp_path / "shards", manifest


def test_names_follow_the_webdataset_convention():
    assert split_key("a/b/000000017.seg.png") == ("a/b/000000017", "seg.png")
    assert split_key("000000017.JPG") == ("000000017", "jpg")
    assert expand_braces("x/train-{000000..000002}.tar") == [f"x/train-00000{i}.tar" for i in range(3)]


def test_vqa_split_round_trips_through_shards(vqa_shards):
    samples, folder, manifest = vqa_shards
    assert [p.name for p in list_shards(folder)] == [f"train-00000{i}.tar" for i in range(4)]
    assert manifest["kind"] == "vqa" and [s["samples"] for s in manifest["shards"]] == [4, 4, 4, 2]
    read = read_shard_samples(folder)
    assert read.skipped.count == 0 and len(read.samples) == len(samples) == 14 * 4
    for original, back in zip(samples, read.samples):
        assert (back.question_id, back.image_id, back.question, back.answer, back.answers, back.question_type) == \
               (original.question_id, original.image_id, original.question, original.answer, original.answers,
                original.question_type)
        assert ".tar/" in back.image_path.as_posix()
    # Images are the original bytes, and load_image reads them straight from the tar member.
    first_original, first_back = samples[0].image_path, read.samples[0].image_path
    assert list(load_image(first_back).getdata()) == list(load_image(first_original).getdata())
    with tarfile.open(list_shards(folder)[0]) as tar:
        assert tar.extractfile(first_back.name).read() == Path(first_original).read_bytes()


def test_caption_split_round_trips_with_open_clip_txt(shapes_root, tmp_path):
    from vlfuse.data.loading import read_split

    samples = read_split(caption_config(shapes_root, tmp_path).data, "train").samples
    write_shards(samples, tmp_path / "shards", max_samples_per_shard=5)
    back = read_shard_samples(tmp_path / "shards").samples
    assert [(s.image_id, s.captions) for s in back] == [(s.image_id, s.captions) for s in samples]
    with tarfile.open(list_shards(tmp_path / "shards")[0]) as tar:
        names = tar.getnames()[:3]
        assert names == ["000000000.png", "000000000.txt", "000000000.json"]
        assert tar.extractfile(names[1]).read().decode() == samples[0].captions[0]


def collect(stream_args: dict, folder: Path, ranks: int = 2, workers: int = 2) -> list[list[str]]:
    keys_per_rank = []
    for rank in range(ranks):
        stream = ShardStream(folder, rank=rank, world_size=ranks, **stream_args)
        loader = DataLoader(stream, batch_size=None, num_workers=workers)
        keys_per_rank.append([f"{item['__shard__']}/{item['__key__']}" for item in loader])
    return keys_per_rank


@pytest.mark.parametrize("per_shard", [4, 8], ids=["shards>=slots", "shards<slots"])
def test_stream_gives_every_sample_once_across_two_workers_and_two_ranks(shapes_root, tiny_config, tmp_path,
                                                                         per_shard):
    samples = split_samples(tiny_config, shapes_root, tmp_path)
    write_shards(samples, tmp_path / "s", max_samples_per_shard=per_shard)
    per_rank = collect({}, tmp_path / "s")
    everything = [k for keys in per_rank for k in keys]
    assert len(everything) == 14 and len(set(everything)) == 14
    assert all(keys for keys in per_rank)


def test_shuffle_buffer_reorders_reproducibly_and_still_covers_everything(vqa_shards):
    _, folder, _ = vqa_shards
    plain = [item["__key__"] for item in ShardStream(folder)]
    shuffled = ShardStream(folder, shuffle_buffer=5, seed=1)
    epoch0 = [item["__key__"] for item in shuffled]
    assert sorted(epoch0) == sorted(plain) and epoch0 != plain
    assert [item["__key__"] for item in ShardStream(folder, shuffle_buffer=5, seed=1)] == epoch0
    shuffled.set_epoch(1)
    assert [item["__key__"] for item in shuffled] != epoch0


def test_stream_decodes_images_and_records(vqa_shards):
    samples, folder, _ = vqa_shards
    item = next(iter(ShardStream(folder, image_size=16)))
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.uint8
    assert [q["question"] for q in item["json"]["questions"]] == [s.question for s in samples[:4]]


def write_tar(path: Path, members: list[tuple[str, bytes]], symlink: str | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return path


@pytest.fixture
def png_bytes(shapes_root) -> bytes:
    return next((shapes_root / "images" / "train").glob("*.png")).read_bytes()


def test_a_bad_member_is_an_error_naming_the_shard_and_the_member(tmp_path, png_bytes):
    shard = write_tar(tmp_path / "bad-000000.tar", [("a.png", png_bytes), ("a.json", b'{"captions": ["ok"]}'),
                                                    ("b.png", png_bytes), ("b.json", b"{not json")])
    with pytest.raises(DataError) as error:
        read_shard_samples(shard)
    assert "bad-000000.tar" in str(error.value) and "'b.json'" in str(error.value)
    skipped = read_shard_samples(shard, on_bad_sample="skip")
    assert [s.captions for s in skipped.samples] == [("ok",)] and skipped.skipped.count == 1
    with pytest.raises(DataError, match="'c.txt'.*not a regular file|bad-000001.tar.*'c.txt'"):
        read_shard_samples(write_tar(tmp_path / "bad-000001.tar", [("a.png", png_bytes)], symlink="c.txt"))
    with pytest.raises(DataError, match="'d.json'.*no image|'d'.*no image"):
        read_shard_samples(write_tar(tmp_path / "bad-000002.tar", [("d.json", b'{"captions": ["x"]}')]))


def test_a_truncated_shard_is_named(vqa_shards, tmp_path):
    _, folder, _ = vqa_shards
    shard = list_shards(folder)[0]
    cut = tmp_path / "cut-000000.tar"
    cut.write_bytes(shard.read_bytes()[:3000])
    with pytest.raises(DataError, match="cut-000000.tar"):
        read_shard_samples(cut)
    with pytest.raises(DataError, match="cut-000000.tar"):
        list(ShardStream(cut.parent / "cut-{000000..000000}.tar"))


def test_data_shard_cli_then_train_vqa_on_shards(shapes_root, tmp_path, cli_main, write_config, tiny_config):
    from vlfuse.tasks import train

    config = write_config(tmp_path / "c.yaml", shapes_root, tmp_path / "run")
    for split in ("train", "val", "test"):
        result = cli_main("data", "shard", config, "--split", split, "--out", tmp_path / "shards" / split,
                          "--max-samples-per-shard", "4")
        assert result.returncode == 0, result.stderr
    assert "Wrote 14 vqa samples in 4 shards" in cli_main("data", "shard", config, "--out", tmp_path / "again",
                                                          "--max-samples-per-shard", "4").stdout
    shards = tmp_path / "shards"
    run = tiny_config(shapes_root, tmp_path / "run", "data.format=webdataset", f"data.root={shards}",
                      "data.train={path: train}", "data.val={path: val}", "data.test={path: test}",
                      "train.epochs=1", "train.checkpoint_every_n_steps=1000")
    result = train(run, progress=False)
    assert result.test_metrics["overall"]["count"] == 4  # the test image's 4 questions, read from its shard
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["train"]["images"] == 14 and summary["train"]["questions"] == 56


def test_caption_shards_serve_retrieval_and_refuse_vqa(shapes_root, tmp_path):
    from vlfuse.data.caption_dataset import CaptionDataset
    from vlfuse.data.formats.common import SkipLog
    from vlfuse.data.loading import check_task_format, read_split
    from vlfuse.data.tokenizer import build_tokenizer
    from vlfuse.errors import ConfigError

    config = caption_config(shapes_root, tmp_path)
    write_shards(read_split(config.data, "train").samples, tmp_path / "caps", max_samples_per_shard=6)
    config.data.format, config.data.root = "webdataset", str(tmp_path)
    config.data.train, config.data.val, config.data.test = type(config.data.train)(path="caps"), None, None
    check_task_format("retrieval", config.data)
    with pytest.raises(ConfigError, match="captions shards, but task vqa"):
        check_task_format("vqa", config.data)
    read = read_split(config.data, "train")
    tokenizer = build_tokenizer(c for s in read.samples for c in s.captions)
    dataset = CaptionDataset(read.samples, tokenizer, 32, 32, SkipLog("error"), progress=False)
    assert len(dataset) == 14 and dataset.images.shape == (14, 3, 32, 32)
    assert Counter(dataset.text_to_image.tolist()) == Counter(range(14))


def test_an_image_in_a_shard_has_the_cache_key_of_its_original_file(vqa_shards):
    from vlfuse.data.feature_cache import image_key

    samples, folder, _ = vqa_shards
    back = read_shard_samples(folder).samples
    assert image_key(back[-1].image_path) == image_key(samples[-1].image_path)


def test_stream_takes_rank_and_world_size_from_torch_distributed(vqa_shards, monkeypatch):
    _, folder, _ = vqa_shards
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda rank=rank: rank)
        seen.append({item["__key__"] for item in ShardStream(folder)})
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 14
