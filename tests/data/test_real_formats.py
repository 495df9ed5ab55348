"""Readers of published formats: the real native samples in ../shared/data, then bad input for each.

The real-data tests assert values read by eye from the files, and skip (saying why) in a clone
without ../shared/data. The bad-input tests build tiny files: every error names its file and
line or field, and the "skip" policy drops exactly the bad samples.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from vlfuse.config import DataConfig, SplitConfig
from vlfuse.data.formats.coco import read_coco_captions, read_coco_instances
from vlfuse.data.formats.flickr30k import read_flickr30k, strip_markup
from vlfuse.data.formats.gqa import read_gqa
from vlfuse.data.formats.image_folder import read_image_folder
from vlfuse.data.formats.karpathy import read_karpathy
from vlfuse.data.formats.nlvr import read_nlvr
from vlfuse.data.formats.nlvr2 import read_nlvr2
from vlfuse.data.formats.snli_ve import read_snli_ve
from vlfuse.data.formats.vgqa import read_vgqa
from vlfuse.data.inspect import inspect_split
from vlfuse.data.loading import read_split
from vlfuse.data.records import CaptionSample, RegionAnnotation, VQASample
from vlfuse.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared real data not found at {path} (only present in the dev/CI checkout)")
    return path


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_lines(path: Path, *rows) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def touch(directory: Path, *names: str) -> Path:
    for name in names:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(b"")  # readers check existence, not pixels
    return directory


def both_policies(read, match: str, *, kept: int, skipped: int = 1, field: str | None = None,
                  line: int | None = None, path: Path | None = None) -> None:
    """`read(policy)` raises the DataError under "error" and drops exactly the bad samples under "skip"."""
    with pytest.raises(DataError, match=match) as info:
        read("error")
    if field is not None:
        assert info.value.field == field
    if line is not None:
        assert info.value.line == line
    if path is not None:
        assert info.value.path == str(path)
    result = read("skip")
    assert len(result.samples) == kept and result.skipped.count == skipped
    assert info.value.reason in result.skipped.summary()


# =============================================================================== real samples

def test_real_gqa_file_and_shard_folder():
    formats = shared("formats/gqa")
    images = formats.parent / "images" / "gqa"
    [sample] = read_gqa(formats / "questions.json", images).samples
    assert sample == VQASample("202218649", "n578564", images / "n578564.jpg", "What is hanging above the chalkboard?",
                               "picture", ("picture",), question_type="rel", answer_type="query")
    assert sample.extra["fullAnswer"] == "The picture is hanging above the chalkboard."
    assert sample.extra["types"]["detailed"] == "relS" and sample.extra["isBalanced"] is True
    assert [step["operation"] for step in sample.extra["semantic"]] == ["select", "relate", "query"]

    shards = read_gqa(formats / "question_dir", images)  # questions0.json, questions1.json in name order
    assert [(s.question_id, s.answer, s.question_type, s.answer_type) for s in shards.samples] == \
        [("202218649", "picture", "rel", "query"), ("20240871", "yes", "attr", "logical")]
    assert shards.samples[1].question == "Does the table below the water look wooden and round?"
    assert shards.samples[1].image_path == images / "n166008.jpg"


def test_real_vgqa():
    path = shared("formats/vgqa/question_answers.json")
    images = path.parents[1] / "images" / "vgqa"
    result = read_vgqa(path, images)
    assert result.skipped.count == 0 and len(result.samples) == 8
    first = result.samples[0]
    assert (first.question_id, first.image_id, first.image_path) == (987278, 4, images / "4.jpg")
    assert (first.question, first.answer, first.extra["raw_answer"]) == \
        ("What is on the curtains?", "Sailboats", "Sailboats.")
    assert [s.answer for s in result.samples[5:]] == ["In a home office", "On floor", "Empty"]
    assert Counter(s.question_type for s in result.samples) == {"what": 4, "where": 3, "how": 1}
    assert {s.image_path.name for s in result.samples} == {"4.jpg", "5.jpg"}


def test_real_nlvr_dev():
    path = shared("nlvr-dev/dev.json")
    result = read_nlvr(path)  # images/ beside dev.json, the published layout
    # 989 statements (the file's last line has no newline: `wc -l` says 988), six images each.
    assert result.skipped.count == 0 and len(result.samples) == 989 * 6
    first = result.samples[0]
    assert first.question_id == "1572-0-0" and first.image_id == "dev-1572-0-0"
    assert first.image_path == path.parent / "images" / "2" / "dev-1572-0-0.png" and first.image_path.is_file()
    assert first.question == "Each grey box contains atleast one yellow object touching the edge"
    assert (first.answer, first.question_type, first.answer_type) == ("true", "nlvr", "true/false")
    assert [s.image_path.name for s in result.samples[:6]] == [f"dev-1572-0-{k}.png" for k in range(6)]
    scene = first.extra["scene"]
    assert len(scene) == 3 and scene[0][0] == {"y_loc": 80, "type": "triangle", "color": "#0099ff", "x_loc": 80,
                                               "size": 20}
    assert first.extra["evals"]["r0"] == "true"
    assert Counter(s.answer for s in result.samples) == {"true": 547 * 6, "false": 442 * 6}
    assert len({s.question for s in result.samples}) == 249  # sentences are reused across scenes


def test_real_nlvr2_pairs():
    path = shared("formats/nlvr2/tiny-dev.json")
    images = path.parents[1] / "images" / "nlvr2"
    result = read_nlvr2(path, images)
    assert result.skipped.count == 0 and len(result.samples) == 8
    first = result.samples[0]
    assert (first.question_id, first.image_id, first.answer) == ("dev-850-0-0", "dev-850-0", "false")
    assert first.question.startswith("The right image shows a curving walkway of dark glass circles")
    assert first.image_path == images / "dev-850-0-img0.png"
    assert first.extra["images"] == (images / "dev-850-0-img0.png", images / "dev-850-0-img1.png")
    assert first.extra["synset"] == "beer bottle" and "sentence" not in first.extra
    assert [s.answer for s in result.samples] == ["false", "true", "false", "true", "true", "false", "false", "true"]


def test_real_snli_ve():
    path = shared("formats/visual_entailment/sample_pairs.jsonl")
    images = path.parents[1] / "images" / "visual_entailment"
    result = read_snli_ve(path, images)
    assert result.skipped.count == 0 and len(result.samples) == 16
    first = result.samples[0]
    assert (first.question_id, first.image_id) == ("2248275918.jpg#2r1c", "2248275918")
    assert first.image_path == images / "2248275918.jpg"
    assert (first.question, first.answer) == ("A toddler sleeps outside.", "contradiction")
    assert first.extra["premise"] == "A toddler poses in front of a computer at a business office."
    # The pairID's last letter is what the writer aimed for; the validated gold label can differ.
    sixth = result.samples[5]
    assert sixth.question_id.endswith("c") and sixth.answer == "neutral"
    assert sixth.answers == ("contradiction", "neutral", "neutral", "neutral", "contradiction")
    assert Counter(s.answer for s in result.samples) == {"entailment": 6, "neutral": 6, "contradiction": 4}
    assert result.samples[-1].image_path.name == "402978771.jpg"


def test_real_coco_captions():
    annotations = shared("coco-mini/annotations")
    train = read_coco_captions(annotations / "captions_train2017.json")  # images: ../train2017, the COCO layout
    assert train.skipped.count == 0 and len(train.samples) == 80
    assert sum(len(s.captions) for s in train.samples) == 400
    first = train.samples[0]
    assert (first.image_id, first.split) == (493652, "train2017")
    assert first.image_path == annotations.parent / "train2017" / "000000493652.jpg" and first.image_path.is_file()
    assert first.captions[0] == "Living room decorated for Christmas with gifts galore"
    assert first.extra == {"width": 640, "height": 399}
    # Human captions often end in a space ("... holding a knife. "): stripped.
    knife = next(s for s in train.samples if s.image_id == 535506)
    assert "A woman in a kitchen at the sink holding a knife." in knife.captions
    val = read_coco_captions(annotations / "captions_val2017.json")
    assert (len(val.samples), sum(len(s.captions) for s in val.samples)) == (159, 795)
    assert all(len(s.captions) == 5 and s.split == "val2017" for s in val.samples)


def test_real_coco_instances():
    annotations = shared("coco-mini/annotations")
    train = read_coco_instances(annotations / "instances_train2017.json")
    assert train.skipped.count == 0 and len(train.samples) == 80
    assert sum(len(r.boxes) for r in train.samples) == 739
    assert sum(sum(r.extra["iscrowd"]) for r in train.samples) == 8
    first = train.samples[0]
    assert isinstance(first, RegionAnnotation)
    assert (first.image_id, first.width, first.height) == (493652, 640, 399)
    # bbox [491.37, 231.11, 66.43, 82.65] px in a 640 x 399 image
    assert first.boxes[0] == pytest.approx((491.37 / 640, 231.11 / 399, 557.8 / 640, 313.76 / 399))
    assert first.categories[:3] == ("potted plant", "tv", "couch") and first.extra["category_ids"][:3] == (64, 72, 63)
    assert all(0 <= v <= 1 for r in train.samples for box in r.boxes for v in box)
    assert all(b[0] < b[2] and b[1] < b[3] for r in train.samples for b in r.boxes)
    val = read_coco_instances(annotations / "instances_val2017.json")
    assert (len(val.samples), sum(len(r.boxes) for r in val.samples)) == (79, 624)  # 79 of the 159 val images


def test_real_flickr30k_sentences_and_splits():
    formats = shared("formats/flickr30k")
    images = formats.parent / "images" / "flickr30k"
    test = read_flickr30k(formats / "sentences", formats / "test.txt", images)
    assert [s.image_id for s in test.samples] == ["6338542128", "4945942737", "1", "2", "3"]
    assert all(s.split == "test" and len(s.captions) == 5 for s in test.samples)
    assert test.samples[0].image_path == images / "6338542128.jpg"
    assert test.samples[0].captions[0] == ("On a sunny, dry day, wearing full football gear, a Texas A&M football "
                                           "player tries to reach an Iowa State football player, for the football "
                                           "during the game.")
    assert test.samples[0].captions[4] == "# 8 for Iowa State stiff arms a Texas AM player attempting to tackle him."
    # tiny-dev.txt ends without a newline; its ids 1-3 are also in test.txt in this sample
    dev = read_flickr30k(formats / "sentences", formats / "tiny-dev.txt", images)
    assert [s.image_id for s in dev.samples] == ["1", "2", "3"] and dev.samples[0].split == "tiny-dev"
    assert dev.samples[0].captions[0] == "A girl with brown hair sits on the edge of a cement area overlooking water."
    every = read_flickr30k(formats / "sentences", image_dir=images)
    assert sorted(s.image_id for s in every.samples) == ["1", "2", "3", "4945942737", "6338542128"]


def test_real_image_folder():
    folder = shared("formats/images")
    result = read_image_folder(folder, split_from_subfolder=True)
    assert result.skipped.count == 0 and all(isinstance(s, CaptionSample) for s in result.samples)
    by_id = {s.image_id: s for s in result.samples}
    assert {"vision_reader/png_example.png", "vision_reader/jpeg_example.jpeg",
            "vision_reader/jpg_example.jpg"} <= set(by_id)
    assert by_id["gqa/n578564.jpg"].split == "gqa" and by_id["gqa/n578564.jpg"].captions == ()
    assert len(result.samples) == sum(1 for p in folder.rglob("*") if p.is_file() and p.suffix != ".txt")


def test_real_formats_through_read_split():
    formats = shared("formats")
    configs = {
        "gqa": SplitConfig(questions="gqa/question_dir", images="images/gqa"),
        "vgqa": SplitConfig(questions="vgqa/question_answers.json", images="images/vgqa"),
        "nlvr2": SplitConfig(path="nlvr2/tiny-dev.json", images="images/nlvr2"),
        "snli_ve": SplitConfig(path="visual_entailment/sample_pairs.jsonl", images="images/visual_entailment"),
    }
    counts = {name: len(read_split(DataConfig(format=name, root=str(formats), train=spec), "train").samples)
              for name, spec in configs.items()}
    assert counts == {"gqa": 2, "vgqa": 8, "nlvr2": 8, "snli_ve": 16}
    nlvr = DataConfig(format="nlvr", root=str(shared("nlvr-dev")), train=SplitConfig(path="dev.json"))
    assert len(read_split(nlvr, "train").samples) == 5934


def test_inspect_real_nlvr2():
    formats = shared("formats")
    data = DataConfig(format="nlvr2", root=str(formats), on_bad_sample="error",
                      val=SplitConfig(path="nlvr2/tiny-dev.json", images="images/nlvr2"))
    report = inspect_split(data, "val", top=1)
    assert report["samples"] == 8 and report["distinct_questions"] == 2
    assert report["images"] == 8  # four pairs: left and right both counted
    assert report["top_answers"] == [{"answer": "false", "count": 4}] and report["distinct_answers"] == 2
    assert report["question_words"] == {"min": 18, "median": 18, "max": 18}
    assert report["question_types"] == {"nlvr2": 8} and report["skipped"] == {"count": 0, "reasons": []}


# =============================================================================== loading and the CLI

def test_read_split_rejects_keys_the_format_ignores(tmp_path):
    data = DataConfig(format="nlvr", train=SplitConfig(path="dev.json", questions="q.json"))
    with pytest.raises(ConfigError, match=r"data.train.questions' is not used by format nlvr"):
        read_split(data, "train")
    with pytest.raises(ConfigError, match=r"data.train.questions' is required for format gqa"):
        read_split(DataConfig(format="gqa", train=SplitConfig(images="x")), "train")
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        read_split(DataConfig(), "dev")


def test_cli_data_inspect_text_json_and_problems(cli_main, tmp_path):
    images = touch(tmp_path / "images", *(f"0/dev-{i}-0-{k}.png" for i in (1, 2) for k in range(6)))
    write_lines(tmp_path / "dev.json", nlvr_row("1-0"), nlvr_row("2-0", label="false", sentence="Two words here"),
                nlvr_row("3-0"), "{oops")
    config = tmp_path / "inspect.yaml"
    # on_bad_sample: error in the config: inspect lists every problem anyway
    config.write_text(f"data:\n  format: nlvr\n  root: {tmp_path}\n  on_bad_sample: error\n"
                      f"  val: {{path: dev.json, images: {images}}}\n", encoding="utf-8")
    text = cli_main("data", "inspect", config, "--split", "val")
    assert text.returncode == 0, text.stderr
    assert "nlvr / val: 12 samples (2 distinct questions), 12 images" in text.stdout
    assert "top answers: false (6), true (6)" in text.stdout
    assert "question words: min 3, median 4, max 5" in text.stdout
    assert "problems: 2 bad samples skipped" in text.stdout and "no images for identifier '3-0'" in text.stdout
    as_json = cli_main("data", "inspect", config, "--split", "val", "--json")
    report = json.loads(as_json.stdout)
    assert report["skipped"]["count"] == 2 and any("dev.json:4" in r for r in report["skipped"]["reasons"])
    missing = cli_main("data", "inspect", config)  # no train split in this config
    assert missing.returncode == 2 and "data.train" in missing.stderr


# =============================================================================== bad input: GQA

def gqa_entry(image="img1", question="What is it?", answer="cat", **extra):
    return {"imageId": image, "question": question, "answer": answer,
            "types": {"semantic": "obj", "structural": "query"}, **extra}


@pytest.mark.parametrize("entry, match, field", [
    ({"question": "Q?"}, "missing field 'imageId'", "2.imageId"),
    (gqa_entry(question="  "), "empty question", "2.question"),
    (gqa_entry(image="nope"), "image for imageId 'nope' not found", "2.imageId"),
    (gqa_entry(image="../img1"), "imageId must be a plain file or folder name", "2.imageId"),
    (gqa_entry(answer=""), "empty answer", "2.answer"),
    (gqa_entry(types=["rel"]), "expected an object, got list", "2.types"),
    ("not an object", "expected an object, got str", "2"),
])
def test_gqa_bad_entries(tmp_path, entry, match, field):
    touch(tmp_path, "img1.jpg")
    path = write_json(tmp_path / "q.json", {"1": gqa_entry(), "2": entry})
    both_policies(lambda p: read_gqa(path, on_bad_sample=p), match, kept=1, field=field, path=path)


def test_gqa_unanswered_and_untyped_questions(tmp_path):
    touch(tmp_path, "img1.jpg")
    path = write_json(tmp_path / "q.json", {"7": {"imageId": "img1", "question": "What is it?"}})
    [sample] = read_gqa(path).samples
    assert (sample.answer, sample.answers, sample.question_type) == (None, (), "unknown")


def test_gqa_structure_and_shards(tmp_path):
    touch(tmp_path / "img", "img1.jpg")
    listed = write_json(tmp_path / "list.json", [gqa_entry()])
    with pytest.raises(DataError, match="expected a JSON object mapping question ids"):
        read_gqa(listed, tmp_path / "img", on_bad_sample="skip")
    broken = tmp_path / "broken.json"
    broken.write_text('{"1": {"imageId": "img1",\n "question": }}')
    with pytest.raises(DataError, match="malformed JSON at line 2, column 14"):
        read_gqa(broken, tmp_path / "img", on_bad_sample="skip")
    shards = tmp_path / "shards"
    shards.mkdir()
    write_json(shards / "a.json", {"1": gqa_entry()})
    write_json(shards / "b.json", {"1": gqa_entry(), "2": gqa_entry()})
    both_policies(lambda p: read_gqa(shards, tmp_path / "img", on_bad_sample=p), "duplicate question id '1'",
                  kept=2, path=shards / "b.json")
    with pytest.raises(DataError, match="no .json question files"):
        read_gqa(tmp_path / "img", tmp_path / "img")
    with pytest.raises(DataError, match="image directory not found"):
        read_gqa(shards, tmp_path / "absent")


# =============================================================================== bad input: Visual Genome QA

def vg_qa(qa_id, question="What is it?", answer="A cat.", image_id=1):
    return {"qa_id": qa_id, "image_id": image_id, "question": question, "answer": answer, "q_objects": []}


@pytest.mark.parametrize("qa, match, field", [
    ({"qa_id": 2, "answer": "Yes."}, "missing field 'question'", "[0].qas[1].question"),
    (vg_qa(2, answer=" "), "empty answer", "[0].qas[1].answer"),
    (vg_qa(2, image_id=9), "image_id 9 differs from its image entry's id 1", "[0].qas[1].image_id"),
    (vg_qa(1), "duplicate qa_id 1", "[0].qas[1].qa_id"),
    (vg_qa(None), "missing field 'qa_id'", "[0].qas[1].qa_id"),
])
def test_vgqa_bad_qas(tmp_path, qa, match, field):
    touch(tmp_path, "VG_100K/1.jpg")  # found in the published sub-folder
    path = write_json(tmp_path / "qa.json", [{"id": 1, "qas": [vg_qa(1), qa]}])
    both_policies(lambda p: read_vgqa(path, on_bad_sample=p), match, kept=1, field=field)


def test_vgqa_unknown_image_costs_its_questions(tmp_path):
    touch(tmp_path, "1.jpg")
    path = write_json(tmp_path / "qa.json", [{"id": 1, "qas": [vg_qa(1)]},
                                              {"id": 77, "qas": [vg_qa(2, image_id=77), vg_qa(3, image_id=77)]}])
    both_policies(lambda p: read_vgqa(path, on_bad_sample=p), "image not found for image id 77", kept=1, skipped=2,
                  field="[1]")
    [sample] = read_vgqa(path, on_bad_sample="skip").samples
    assert (sample.answer, sample.extra["raw_answer"], sample.question_type) == ("A cat", "A cat.", "what")


def test_vgqa_structure(tmp_path):
    path = write_json(tmp_path / "qa.json", {"id": 1, "qas": []})
    with pytest.raises(DataError, match="expected a JSON list of images"):
        read_vgqa(path, on_bad_sample="skip")
    both_policies(lambda p: read_vgqa(write_json(tmp_path / "b.json", [{"id": 1}]), on_bad_sample=p),
                  "missing field 'qas'", kept=0, field="[0].qas")


# =============================================================================== bad input: NLVR (v1)

def nlvr_row(identifier, label="true", sentence="There is a yellow block.", directory="0"):
    return {"sentence": sentence, "label": label, "identifier": identifier, "directory": directory,
            "evals": {"r0": label}, "structured_rep": [[{"type": "square", "color": "Yellow"}], [], []]}


@pytest.mark.parametrize("row, match, field", [
    ('{"sentence": "x", "label": tru}', "malformed JSON at line 2, column 28", None),
    (nlvr_row("2-0", sentence=""), "empty question", "sentence"),
    (nlvr_row("2-0", label="maybe"), "label must be true or false", "label"),
    (nlvr_row("9-9"), "no images for identifier '9-9'", "identifier"),
    (nlvr_row("1-0"), "duplicate identifier '1-0'", "identifier"),
    (nlvr_row("2-0", directory="../0"), "directory must be a plain file or folder name", "directory"),
    ({"label": "true", "identifier": "2-0", "directory": "0"}, "missing field 'sentence'", "sentence"),
])
def test_nlvr_bad_rows(tmp_path, row, match, field):
    images = touch(tmp_path / "images", *(f"0/dev-{i}-0-{k}.png" for i in (1, 2) for k in range(6)))
    path = write_lines(tmp_path / "dev.json", nlvr_row("1-0"), row)
    both_policies(lambda p: read_nlvr(path, on_bad_sample=p), match, kept=6, field=field, line=2, path=path)
    assert {s.image_path.parent for s in read_nlvr(path, on_bad_sample="skip").samples} == {images / "0"}


def test_nlvr_unchecked_images_and_missing_folder(tmp_path):
    path = write_lines(tmp_path / "train.json", nlvr_row("5-1", label="False"))
    samples = read_nlvr(path, tmp_path / "absent", check_images=False).samples
    assert [s.image_path for s in samples] == [tmp_path / "absent" / "0" / f"train-5-1-{k}.png" for k in range(6)]
    assert samples[0].answer == "false"
    with pytest.raises(DataError, match="image directory not found"):
        read_nlvr(path, tmp_path / "absent")


# =============================================================================== bad input: NLVR2

def nlvr2_row(identifier, label="True", sentence="Both images show a dog.", **extra):
    return {"identifier": identifier, "sentence": sentence, "label": label, "writer": "1", **extra}


@pytest.mark.parametrize("row, match, field", [
    (nlvr2_row("dev-2-0-0"), "right image of 'dev-2-0-0' not found", "identifier"),
    (nlvr2_row("dev-9-0-0"), "left image of 'dev-9-0-0' not found", "identifier"),
    (nlvr2_row("nodash"), "identifier 'nodash' is not <split>-<set>-<pair>-<sentence>", "identifier"),
    (nlvr2_row("dev-1-0-1", label="yes"), "label must be true or false", "label"),
    (nlvr2_row("dev-1-0-0"), "duplicate identifier 'dev-1-0-0'", "identifier"),
    (nlvr2_row("dev-1-0-1", sentence=None), "missing field 'sentence'", "sentence"),
    ("[1, 2]", "expected an object, got list", None),
])
def test_nlvr2_bad_rows(tmp_path, row, match, field):
    touch(tmp_path, "dev-1-0-img0.png", "dev-1-0-img1.png", "dev-2-0-img0.png")
    path = write_lines(tmp_path / "dev.json", nlvr2_row("dev-1-0-0"), row)
    both_policies(lambda p: read_nlvr2(path, on_bad_sample=p), match, kept=1, field=field, line=2)


def test_nlvr2_train_directory(tmp_path):
    touch(tmp_path / "train", "7/train-3-1-img0.png", "7/train-3-1-img1.png")
    path = write_lines(tmp_path / "train.json", nlvr2_row("train-3-1-2", directory=7, label=False))
    [sample] = read_nlvr2(path, tmp_path / "train").samples
    assert sample.image_path == tmp_path / "train" / "7" / "train-3-1-img0.png"
    assert sample.extra["images"][1].name == "train-3-1-img1.png" and sample.answer == "false"


# =============================================================================== bad input: SNLI-VE

def ve_row(pair, label="entailment", hypothesis="A dog runs.", image="10", **extra):
    return {"Flickr30K_ID": image, "pairID": pair, "gold_label": label, "annotator_labels": [label],
            "sentence1": "A dog runs in a park.", "sentence2": hypothesis, **extra}


@pytest.mark.parametrize("row, match, field", [
    (ve_row("b", label="-"), r"gold_label must be one of .*'-' \(no annotator majority\)", "gold_label"),
    (ve_row("b", hypothesis=""), "empty question", "sentence2"),
    (ve_row("b", image="99"), "image for Flickr30K_ID 99 not found", "Flickr30K_ID"),
    (ve_row("b", annotator_labels="neutral"), "expected a list, got str", "annotator_labels"),
    (ve_row("a"), "duplicate pairID 'a'", "pairID"),
    ({"pairID": "b", "gold_label": "neutral", "sentence2": "x"}, "missing field 'Flickr30K_ID'", "Flickr30K_ID"),
])
def test_snli_ve_bad_rows(tmp_path, row, match, field):
    touch(tmp_path, "10.jpg")
    path = write_lines(tmp_path / "ve.jsonl", ve_row("a"), row)
    both_policies(lambda p: read_snli_ve(path, tmp_path, on_bad_sample=p), match, kept=1, field=field, line=2)


# =============================================================================== bad input: COCO

def coco_doc(images=None, annotations=None, **extra):
    images = [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100}] if images is None else images
    return {"images": images, "annotations": annotations or [], **extra}


@pytest.mark.parametrize("annotation, match, field", [
    ({"image_id": 5, "caption": "A dog."}, "unknown image id 5", "annotations[1].image_id"),
    ({"image_id": 1, "caption": "   "}, "empty caption", "annotations[1].caption"),
    ({"image_id": 1}, "missing field 'caption'", "annotations[1].caption"),
    ({"image_id": "1", "caption": "A dog."}, "unknown image id '1'", "annotations[1].image_id"),
])
def test_coco_captions_bad_annotations(tmp_path, annotation, match, field):
    touch(tmp_path, "a.jpg")
    path = write_json(tmp_path / "captions.json", coco_doc(annotations=[{"image_id": 1, "caption": "A cat. "},
                                                                        annotation]))
    both_policies(lambda p: read_coco_captions(path, tmp_path, on_bad_sample=p), match, kept=1, field=field)
    [sample] = read_coco_captions(path, tmp_path, on_bad_sample="skip").samples
    assert sample.captions == ("A cat.",) and sample.split == "captions"


def test_coco_bad_image_entries_do_not_orphan_their_captions(tmp_path):
    touch(tmp_path, "a.jpg")
    doc = coco_doc(images=[{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "missing.jpg"},
                           {"id": 1, "file_name": "a.jpg"}],
                   annotations=[{"image_id": 2, "caption": "Gone."}, {"image_id": 1, "caption": "Here."}])
    path = write_json(tmp_path / "captions.json", doc)
    with pytest.raises(DataError, match="image not found: .*missing.jpg") as info:
        read_coco_captions(path, tmp_path)
    assert info.value.field == "images[1].file_name"
    result = read_coco_captions(path, tmp_path, on_bad_sample="skip")
    assert result.skipped.count == 2 and "duplicate image id 1" in result.skipped.summary()
    assert [(s.image_id, s.captions) for s in result.samples] == [(1, ("Here.",))]


def test_coco_structure_is_fatal(tmp_path):
    for doc, match in [([], "expected a JSON object"), ({"images": []}, "missing 'annotations' list"),
                       ({"images": {}, "annotations": []}, "expected a list, got dict")]:
        with pytest.raises(DataError, match=match):
            read_coco_captions(write_json(tmp_path / "c.json", doc), tmp_path, on_bad_sample="skip")
    with pytest.raises(DataError, match="missing 'categories' list"):
        read_coco_instances(write_json(tmp_path / "i.json", coco_doc()), tmp_path, on_bad_sample="skip")


def test_coco_instances_boxes_are_normalised_and_clipped(tmp_path):
    touch(tmp_path, "a.jpg")
    doc = coco_doc(annotations=[{"id": 10, "image_id": 1, "category_id": 3, "bbox": [20, 10, 100, 50]},
                                {"id": 11, "image_id": 1, "category_id": 7, "bbox": [190, 90, 20, 20], "iscrowd": 1}],
                   categories=[{"id": 3, "name": "car"}, {"id": 7, "name": "dog"}])
    [region] = read_coco_instances(write_json(tmp_path / "i.json", doc), tmp_path).samples
    assert region.boxes == (pytest.approx((0.1, 0.1, 0.6, 0.6)), pytest.approx((0.95, 0.9, 1.0, 1.0)))
    assert region.categories == ("car", "dog") and region.extra["iscrowd"] == (False, True)
    assert region.extra["annotation_ids"] == (10, 11) and (region.width, region.height) == (200, 100)


@pytest.mark.parametrize("annotation, match, field", [
    ({"image_id": 1, "category_id": 99, "bbox": [0, 0, 1, 1]}, "unknown category_id 99", "annotations[1].category_id"),
    ({"image_id": 1, "category_id": 3, "bbox": [0, 0, 1]}, r"bbox must be \[x, y, width, height\]",
     "annotations[1].bbox"),
    ({"image_id": 1, "category_id": 3, "bbox": [0, 0, 0, 5]}, "bbox has no area", "annotations[1].bbox"),
    ({"image_id": 1, "category_id": 3, "bbox": [0, float("nan"), 1, 1]}, "bbox value must be a finite number",
     "annotations[1].bbox[1]"),
    ({"image_id": 4, "category_id": 3, "bbox": [0, 0, 1, 1]}, "unknown image id 4", "annotations[1].image_id"),
])
def test_coco_instances_bad_annotations(tmp_path, annotation, match, field):
    touch(tmp_path, "a.jpg")
    good = {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10]}
    path = write_json(tmp_path / "i.json", coco_doc(annotations=[good, annotation],
                                                    categories=[{"id": 3, "name": "x"}]))
    both_policies(lambda p: read_coco_instances(path, tmp_path, on_bad_sample=p), match, kept=1, field=field)
    [region] = read_coco_instances(path, tmp_path, on_bad_sample="skip").samples
    assert len(region.boxes) == 1  # the image stays, with its good box


def test_coco_instances_need_image_size(tmp_path):
    touch(tmp_path, "a.jpg", "b.jpg")
    path = write_json(tmp_path / "i.json", coco_doc(images=[{"id": 1, "file_name": "a.jpg", "width": 2, "height": 2},
                                                            {"id": 2, "file_name": "b.jpg", "width": 0, "height": 2}],
                                                    categories=[]))
    both_policies(lambda p: read_coco_instances(path, tmp_path, on_bad_sample=p),
                  "width must be a positive integer .*, got 0", kept=1, field="images[1].width")


# =============================================================================== Karpathy splits

def karpathy_image(name, split, sentences=("A dog runs.",), **extra):
    return {"filename": name, "split": split, "sentences": [{"raw": s, "tokens": s.split()} for s in sentences],
            **extra}


def test_karpathy_coco_and_flickr_layouts(tmp_path):
    touch(tmp_path, "val2014/COCO_val2014_000000391895.jpg", "train2014/COCO_train2014_000000000009.jpg",
          "1000092795.jpg")
    coco = write_json(tmp_path / "dataset_coco.json", {"dataset": "coco", "images": [
        karpathy_image("COCO_val2014_000000391895.jpg", "test", ["A man rides a bike. ", "A biker."],
                       filepath="val2014", cocoid=391895, imgid=0, sentids=[0, 1]),
        karpathy_image("COCO_train2014_000000000009.jpg", "restval", filepath="train2014", cocoid=9),
        karpathy_image("COCO_val2014_000000000042.jpg", "val", filepath="val2014", cocoid=42),  # not read: unwanted
    ]})
    result = read_karpathy(coco, splits=("test", "restval"))
    first, second = result.samples
    assert (first.image_id, first.split, first.captions) == (391895, "test", ("A man rides a bike.", "A biker."))
    assert first.image_path == tmp_path / "val2014" / "COCO_val2014_000000391895.jpg"
    assert first.extra == {"imgid": 0, "sentids": [0, 1]}
    assert (second.image_id, second.split) == (9, "restval")
    flickr = write_json(tmp_path / "dataset_flickr30k.json", {"dataset": "flickr30k", "images": [
        karpathy_image("1000092795.jpg", "train", ["Two young guys with shaggy hair look at their hands."])]})
    [sample] = read_karpathy(flickr, tmp_path, splits="train").samples
    assert (sample.image_id, sample.image_path) == ("1000092795", tmp_path / "1000092795.jpg")
    assert read_karpathy(flickr, tmp_path, splits="test").samples == []


@pytest.mark.parametrize("entry, match, field", [
    (karpathy_image("missing.jpg", "train"), "image not found", "images[1].filename"),
    (karpathy_image("b.jpg", "train", [""]), "empty sentence", "images[1].sentences[0].raw"),
    ({"filename": "b.jpg", "split": "train", "sentences": [{"tokens": ["a"]}]}, "missing field 'raw'",
     "images[1].sentences[0].raw"),
    ({"filename": "b.jpg", "sentences": []}, "missing field 'split'", "images[1].split"),
    (karpathy_image("a.jpg", "train"), "duplicate image 'a'", "images[1]"),
    (karpathy_image("b.jpg", "train", filepath="../x"), "filepath must be a plain", "images[1].filepath"),
])
def test_karpathy_bad_images(tmp_path, entry, match, field):
    touch(tmp_path, "a.jpg", "b.jpg")
    path = write_json(tmp_path / "dataset.json", {"images": [karpathy_image("a.jpg", "train"), entry]})
    both_policies(lambda p: read_karpathy(path, on_bad_sample=p), match, kept=1, field=field)


# =============================================================================== Flickr30k sentence files

def test_strip_markup():
    assert strip_markup("[/EN#1/people A girl] with [/EN#2/bodyparts/other brown  hair] sits , here .") == \
        "A girl with brown hair sits, here."
    assert strip_markup("[/EN#0/notvisual him] [/EN#3/other # 8] ok") == "him # 8 ok"


def flickr_tree(tmp_path: Path) -> Path:
    sentences = tmp_path / "Sentences"
    sentences.mkdir()
    (sentences / "10.txt").write_text("[/EN#1/people A dog] runs .\n\n[/EN#2/scene A park] .\n", encoding="utf-8")
    touch(tmp_path / "flickr30k-images", "10.jpg", "11.jpg", "12.jpg")
    return sentences


@pytest.mark.parametrize("sentences_11, match, line", [
    (None, "no sentence file for this image", 2),
    ("", "no captions in the sentence file", None),
    ("[/EN#1/people A dog runs .\n", "malformed phrase markup", 1),
    ("[/EN#1/people ]\n", "empty caption", 1),
])
def test_flickr30k_bad_sentence_files(tmp_path, sentences_11, match, line):
    sentences = flickr_tree(tmp_path)
    if sentences_11 is not None:
        (sentences / "11.txt").write_text(sentences_11, encoding="utf-8")
    split = tmp_path / "val.txt"
    split.write_text("10\n11", encoding="utf-8")  # no final newline, as published
    both_policies(lambda p: read_flickr30k(sentences, split, on_bad_sample=p), match, kept=1, line=line)
    [sample] = read_flickr30k(sentences, split, on_bad_sample="skip").samples
    assert (sample.image_id, sample.captions, sample.split) == ("10", ("A dog runs.", "A park."), "val")


def test_flickr30k_split_list_problems(tmp_path):
    sentences = flickr_tree(tmp_path)
    split = tmp_path / "test.txt"
    split.write_text("10\n\n10\n13\n", encoding="utf-8")
    with pytest.raises(DataError, match="image id '10' listed twice") as info:
        read_flickr30k(sentences, split)
    assert info.value.line == 3
    result = read_flickr30k(sentences, split, on_bad_sample="skip")
    assert result.skipped.count == 2 and "image for '13' not found" in result.skipped.summary()
    with pytest.raises(DataError, match="sentences folder not found"):
        read_flickr30k(tmp_path / "nope")
    split.write_text("../10\n", encoding="utf-8")
    with pytest.raises(DataError, match="image id must be a plain"):
        read_flickr30k(sentences, split)


# =============================================================================== image folder

def test_image_folder_sidecars_and_problems(tmp_path):
    touch(tmp_path, "train/b.png", "train/a.JPG", "val/c.webp", ".hidden/d.jpg", "notes.md", "e.gif")
    (tmp_path / "train" / "a.txt").write_text("A cat.\n\n  A grey cat. \n", encoding="utf-8")
    (tmp_path / "val" / "c.txt").write_text(" \n", encoding="utf-8")
    (tmp_path / "e.txt").write_bytes(b"caf\xe9")
    with pytest.raises(DataError, match="not valid UTF-8: byte 0xe9") as info:
        read_image_folder(tmp_path)  # e.gif comes first in path order
    assert info.value.path == str(tmp_path / "e.txt") and info.value.line == 1
    result = read_image_folder(tmp_path, split_from_subfolder=True, on_bad_sample="skip")
    assert result.skipped.count == 2 and f"{tmp_path / 'val' / 'c.txt'}: empty caption file" in result.skipped.summary()
    assert [(s.image_id, s.captions, s.split) for s in result.samples] == [
        ("train/a.JPG", ("A cat.", "A grey cat."), "train"), ("train/b.png", (), "train")]


def test_image_folder_needs_images(tmp_path):
    with pytest.raises(DataError, match="image folder not found"):
        read_image_folder(tmp_path / "absent")
    touch(tmp_path, "readme.txt")
    with pytest.raises(DataError, match="no images"):
        read_image_folder(tmp_path)
