"""Fuzzing every reader of a published format: random bytes, random JSON, random values in a
well-formed skeleton. Each call either returns a ReadResult or raises one of vlfuse's own errors
(a VLFuseError), under both bad-sample policies; anything else is a bug.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlfuse.data.formats.coco import read_coco_captions, read_coco_instances
from vlfuse.data.formats.common import ReadResult
from vlfuse.data.formats.flickr30k import read_flickr30k
from vlfuse.data.formats.gqa import read_gqa
from vlfuse.data.formats.image_folder import read_image_folder
from vlfuse.data.formats.karpathy import read_karpathy
from vlfuse.data.formats.nlvr import read_nlvr
from vlfuse.data.formats.nlvr2 import read_nlvr2
from vlfuse.data.formats.snli_ve import read_snli_ve
from vlfuse.data.formats.vgqa import read_vgqa
from vlfuse.errors import DataError, VLFuseError

# Field names of every format, so random objects often hit the code that reads them.
KEYS = ["imageId", "question", "answer", "types", "semantic", "structural", "id", "image_id", "qas", "qa_id",
        "sentence", "label", "identifier", "directory", "structured_rep", "Flickr30K_ID", "sentence1", "sentence2",
        "gold_label", "annotator_labels", "pairID", "images", "annotations", "categories", "file_name", "width",
        "height", "caption", "category_id", "bbox", "iscrowd", "filename", "filepath", "split", "sentences", "raw",
        "cocoid"]
scalars = (st.none() | st.booleans() | st.integers(-2, 2**40) | st.floats(allow_nan=True) | st.text(max_size=12)
           | st.sampled_from(KEYS + ["1", "a.jpg", "true", "False", "entailment", "-", "dev-1-0-0", "1-0", "0"]))
json_ish = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner,
                                                               max_size=6),
    max_leaves=24)
raw_bytes = st.binary(max_size=200) | json_ish.map(lambda o: json.dumps(o).encode())
jsonl_bytes = st.lists(st.binary(max_size=60) | json_ish.map(json.dumps).map(str.encode), max_size=4).map(b"\n".join)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def only_clean_outcomes(call) -> None:
    """Calling a reader on garbage may return or raise one of our errors, nothing else."""
    for policy in ("error", "skip"):
        try:
            assert isinstance(call(policy), ReadResult)
        except VLFuseError:
            pass


def scene(tmp_path: Path) -> Path:
    """Images every reader can find, so fuzzed input that names them reaches the deeper checks."""
    for name in ("1.jpg", "a.jpg", "dev-1-0-img0.png", "dev-1-0-img1.png", "0/x-1-0-0.png", "flickr30k-images/1.jpg",
                 "Sentences/1.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if not (tmp_path / name).exists():
            (tmp_path / name).write_bytes(b"")
    return tmp_path


# Whole-document readers: (reader taking the file and the image folder), fed the main file.
DOCUMENT_READERS = {
    "gqa": lambda f, d, p: read_gqa(f, d, on_bad_sample=p),
    "vgqa": lambda f, d, p: read_vgqa(f, d, on_bad_sample=p),
    "coco_captions": lambda f, d, p: read_coco_captions(f, d, on_bad_sample=p),
    "coco_instances": lambda f, d, p: read_coco_instances(f, d, on_bad_sample=p),
    "karpathy": lambda f, d, p: read_karpathy(f, d, on_bad_sample=p),
}
LINE_READERS = {
    "nlvr": lambda f, d, p: read_nlvr(f, d, on_bad_sample=p),
    "nlvr2": lambda f, d, p: read_nlvr2(f, d, on_bad_sample=p),
    "snli_ve": lambda f, d, p: read_snli_ve(f, d, on_bad_sample=p),
}


@FUZZ
@given(data=raw_bytes)
def test_fuzz_document_readers_on_random_files(tmp_path, data):
    directory = scene(tmp_path)
    (tmp_path / "doc.json").write_bytes(data)
    for read in DOCUMENT_READERS.values():
        only_clean_outcomes(lambda p: read(tmp_path / "doc.json", directory, p))


@FUZZ
@given(data=jsonl_bytes)
def test_fuzz_line_readers_on_random_lines(tmp_path, data):
    directory = scene(tmp_path)
    (tmp_path / "rows.jsonl").write_bytes(data)
    for read in LINE_READERS.values():
        only_clean_outcomes(lambda p: read(tmp_path / "rows.jsonl", directory, p))


@FUZZ
@given(entry=json_ish, image=json_ish, annotation=json_ish)
def test_fuzz_document_readers_structured(tmp_path, entry, image, annotation):
    """Random values inside the right skeleton reach the per-field checks, not just the parser."""
    directory = scene(tmp_path)
    docs = {
        "gqa": {"1": {"imageId": "1", "question": "Q?"}, "2": entry},
        "vgqa": [{"id": 1, "qas": [entry, {"qa_id": 1, "question": "Q?", "answer": "A."}]}, image],
        "coco_captions": {"images": [{"id": 1, "file_name": "a.jpg"}, image],
                          "annotations": [{"image_id": 1, "caption": "C."}, annotation]},
        "coco_instances": {"images": [{"id": 1, "file_name": "a.jpg", "width": 2, "height": 2}, image],
                           "annotations": [annotation, {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}],
                           "categories": [{"id": 1, "name": "x"}]},
        "karpathy": {"images": [{"filename": "a.jpg", "split": "train", "sentences": [entry]}, image]},
    }
    for name, read in DOCUMENT_READERS.items():
        (tmp_path / "doc.json").write_text(json.dumps(docs[name]), encoding="utf-8")
        only_clean_outcomes(lambda p: read(tmp_path / "doc.json", directory, p))


@FUZZ
@given(rows=st.lists(st.dictionaries(st.sampled_from(KEYS), json_ish, max_size=6), max_size=3))
def test_fuzz_line_readers_structured(tmp_path, rows):
    directory = scene(tmp_path)
    good = {"sentence": "S.", "label": "true", "identifier": "dev-1-0-0", "directory": "0",
            "Flickr30K_ID": "1", "sentence2": "H.", "gold_label": "neutral", "pairID": "p"}
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps({**good, **row}) for row in rows), encoding="utf-8")
    for read in LINE_READERS.values():
        only_clean_outcomes(lambda p: read(tmp_path / "rows.jsonl", directory, p))


@FUZZ
@given(sentences=st.binary(max_size=120) | st.text(alphabet="[]/EN#0123 people.,\n", max_size=60).map(str.encode),
       split=st.binary(max_size=40))
def test_fuzz_flickr30k(tmp_path, sentences, split):
    directory = scene(tmp_path)
    (directory / "Sentences" / "1.txt").write_bytes(sentences)
    (tmp_path / "split.txt").write_bytes(split)
    for split_file in (tmp_path / "split.txt", None):
        only_clean_outcomes(lambda p: read_flickr30k(directory / "Sentences", split_file, on_bad_sample=p))


@FUZZ
@given(sidecar=st.binary(max_size=80), image=st.binary(max_size=40))
def test_fuzz_image_folder(tmp_path, sidecar, image):
    folder = tmp_path / "pics"
    folder.mkdir(exist_ok=True)
    (folder / "x.jpg").write_bytes(image)
    (folder / "x.txt").write_bytes(sidecar)
    only_clean_outcomes(lambda p: read_image_folder(folder, on_bad_sample=p))


def test_huge_numbers_are_data_errors(tmp_path):
    """Python refuses integers of over 4300 digits and floats cannot hold 10**400: both are bad data."""
    directory = scene(tmp_path)
    (tmp_path / "doc.json").write_text('{"1": {"imageId": ' + "9" * 5000 + "}}", encoding="utf-8")
    with pytest.raises(DataError, match="malformed JSON: Exceeds the limit"):
        read_gqa(tmp_path / "doc.json", directory)
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 10**30, "height": 2}],
           "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10**400, 1]}],
           "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "doc.json").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(DataError, match="width must be a positive integer"):
        read_coco_instances(tmp_path / "doc.json", directory)
    doc["images"][0]["width"] = 2
    (tmp_path / "doc.json").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(DataError, match=r"bbox value must be a finite number, got 1000000000"):
        read_coco_instances(tmp_path / "doc.json", directory)
