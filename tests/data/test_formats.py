"""Dataset readers: the real VQA v2 sample, handmade files, every error path, and fuzzing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlfuse.data.formats.common import (ReadResult, SkipLog, check_question, iter_jsonl, read_json)
from vlfuse.data.formats.jsonl import read_vqa_csv, read_vqa_jsonl, read_vqa_table
from vlfuse.data.formats.vqav2 import read_vqa_v2
from vlfuse.errors import ConfigError, DataError, VLFuseError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared_formats() -> Path:
    path = SHARED_DATA / "formats"
    if not (path / "vqav2" / "questions.json").exists():
        pytest.skip(f"shared real data not found at {path} (only present in the dev/CI checkout)")
    return path


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def touch_images(directory: Path, *names: str) -> Path:
    directory.mkdir(exist_ok=True)
    for name in names:
        (directory / name).write_bytes(b"")  # readers check existence, not pixels
    return directory


def vqa_pair(tmp_path: Path, questions: list, annotations: list | None, subtype="val2014"):
    q = write_json(tmp_path / "q.json", {"data_subtype": subtype, "questions": questions})
    a = None if annotations is None else write_json(tmp_path / "a.json", {"annotations": annotations})
    return q, a


def question(qid, image_id=1, text="What is it?"):
    return {"question_id": qid, "image_id": image_id, "question": text}


def annotation(qid, answers=("cat",), **extra):
    return {"question_id": qid, "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)],
            **extra}


# --- real VQA v2 -------------------------------------------------------------------------------

def test_real_vqa_v2_sample():
    formats = shared_formats()
    result = read_vqa_v2(formats / "vqav2" / "questions.json", formats / "vqav2" / "annotations.json",
                         formats / "images" / "vqav2")
    assert result.skipped.count == 0
    by_id = {s.question_id: s for s in result.samples}
    assert sorted(by_id) == [458752000, 458752001, 458752002]
    first = by_id[458752000]
    # No multiple_choice_answer in this copy: the majority of 10 answers ("net" x7) wins.
    assert first.answer == "net" and len(first.answers) == 10 and "netting" in first.answers
    assert by_id[458752001].answer == "pitcher" and by_id[458752002].answer == "orange"
    assert first.question == "What is this photo taken looking through?"
    for sample in result.samples:
        assert sample.image_id == 458752
        assert sample.image_path.name == "COCO_train2014_000000458752.jpg" and sample.image_path.is_file()
        assert sample.question_type == sample.answer_type == "unknown"


def test_real_vqa_v2_questions_only_is_test_style():
    formats = shared_formats()
    result = read_vqa_v2(formats / "vqav2" / "questions.json", image_dir=formats / "images" / "vqav2")
    assert [s.answer for s in result.samples] == [None, None, None]
    assert all(s.answers == () for s in result.samples)


# --- handmade VQA v2 ---------------------------------------------------------------------------

def test_handmade_pair_keeps_types_and_multiple_choice_answer(tmp_path):
    images = touch_images(tmp_path / "img", "COCO_val2014_000000000001.jpg")
    q, a = vqa_pair(tmp_path, [question(10)], [
        annotation(10, ["two", "2", "2"], multiple_choice_answer="two", question_type="how many",
                   answer_type="number", image_id=1)])
    [sample] = read_vqa_v2(q, a, images).samples
    assert (sample.answer, sample.answers) == ("two", ("two", "2", "2"))
    assert (sample.question_type, sample.answer_type) == ("how many", "number")
    assert sample.image_path == images / "COCO_val2014_000000000001.jpg"


@pytest.mark.parametrize("name", ["000000000042.jpg", "42.png", "abc_000000000042.jpeg",
                                  "val2014_000042.png"])
def test_image_name_fallbacks(tmp_path, name):
    images = touch_images(tmp_path / "img", name, "notes_000000000042.txt")
    q, _ = vqa_pair(tmp_path, [question(1, image_id=42)], None)
    [sample] = read_vqa_v2(q, image_dir=images).samples
    assert sample.image_path == images / name


def test_image_dir_defaults_to_questions_folder(tmp_path):
    touch_images(tmp_path, "COCO_val2014_000000000001.jpg")
    q, _ = vqa_pair(tmp_path, [question(1)], None)
    assert read_vqa_v2(q).samples[0].image_path == tmp_path / "COCO_val2014_000000000001.jpg"


def test_unchecked_images_get_the_coco_path(tmp_path):
    q, _ = vqa_pair(tmp_path, [question(1, image_id=7)], None)
    [sample] = read_vqa_v2(q, image_dir=tmp_path / "absent", check_images=False).samples
    assert sample.image_path == tmp_path / "absent" / "COCO_val2014_000000000007.jpg"


def test_missing_image_dir_is_fatal(tmp_path):
    q, _ = vqa_pair(tmp_path, [question(1)], None)
    with pytest.raises(DataError, match="image directory not found"):
        read_vqa_v2(q, image_dir=tmp_path / "absent", on_bad_sample="skip")


def test_unknown_image_error_vs_skip(tmp_path):
    images = touch_images(tmp_path / "img", "COCO_val2014_000000000001.jpg")
    q, a = vqa_pair(tmp_path, [question(1), question(2, image_id=99), question(3)],
                    [annotation(1), annotation(2), annotation(3)])
    with pytest.raises(DataError, match="image not found for image_id 99"):
        read_vqa_v2(q, a, images)
    result = read_vqa_v2(q, a, images, on_bad_sample="skip")
    assert [s.question_id for s in result.samples] == [1, 3]
    assert result.skipped.count == 1
    assert "image not found for image_id 99" in result.skipped.summary()
    assert result.skipped.as_dict()["count"] == 1


@pytest.mark.parametrize("doc, match", [
    ([], "expected a JSON object"),
    ({"info": {}}, "missing 'questions' list"),
    ({"questions": {}}, "'questions' must be a list"),
])
def test_top_level_structure_is_fatal(tmp_path, doc, match):
    q = write_json(tmp_path / "q.json", doc)
    with pytest.raises(DataError, match=match) as info:
        read_vqa_v2(q, on_bad_sample="skip", check_images=False)
    assert str(q) in str(info.value)


def test_annotations_top_level_names_field(tmp_path):
    q, _ = vqa_pair(tmp_path, [question(1)], None)
    a = write_json(tmp_path / "a.json", {"annotation": []})
    with pytest.raises(DataError, match="missing 'annotations' list") as info:
        read_vqa_v2(q, a, check_images=False)
    assert info.value.field == "annotations"


@pytest.mark.parametrize("entry, field, match", [
    ({"image_id": 1, "question": "Q?"}, "questions[0].question_id", "missing field 'question_id'"),
    ({"question_id": 5, "question": "Q?"}, "questions[0].image_id",
     r"missing field 'image_id' \(question_id 5\)"),
    ({"question_id": 5, "image_id": 1}, "questions[0].question",
     r"missing field 'question' \(question_id 5\)"),
    (question(5, text=7), "questions[0].question", "question must be a string, got int"),
    (question(5, text="  "), "questions[0].question", "empty question"),
    (question(5, text="x" * 1001), "questions[0].question", "question too long"),
    (question(5, image_id="1"), "questions[0].image_id", "image_id must be an integer"),
    (question(True), "questions[0].question_id", "question_id must be"),
    ("not an object", "questions[0]", "expected an object, got str"),
])
def test_bad_question_names_field(tmp_path, entry, field, match):
    q, _ = vqa_pair(tmp_path, [entry], None)
    with pytest.raises(DataError, match=match) as info:
        read_vqa_v2(q, check_images=False)
    assert info.value.field == field and info.value.path == str(q)


def test_duplicate_question_id(tmp_path):
    q, _ = vqa_pair(tmp_path, [question(1), question(1, text="Again?")], None)
    with pytest.raises(DataError, match="duplicate question_id 1"):
        read_vqa_v2(q, check_images=False)
    result = read_vqa_v2(q, check_images=False, on_bad_sample="skip")
    assert [s.question for s in result.samples] == ["What is it?"] and result.skipped.count == 1


@pytest.mark.parametrize("annotations, match, lost", [
    ([annotation(1), annotation(2)], "annotation for unknown question_id 2", 0),
    ([annotation(1), annotation(1)], "duplicate annotation for question_id 1", 0),
    ([], "no annotation for question_id 1", 1),
    ([{"question_id": 1}], r"missing field 'answers' \(question_id 1\)", 1),
    ([annotation(1, answers=())], "answers must be a non-empty list", 1),
    ([{"question_id": 1, "answers": ["cat"]}], "string 'answer'", 1),
    ([annotation(1, question_type=3)], "question_type must be a string", 1),
    ([annotation(1, image_id=2)], "annotation image_id 2 differs", 1),
])
def test_bad_annotations(tmp_path, annotations, match, lost):
    q, a = vqa_pair(tmp_path, [question(1)], annotations)
    with pytest.raises(DataError, match=match):
        read_vqa_v2(q, a, check_images=False)
    result = read_vqa_v2(q, a, check_images=False, on_bad_sample="skip")
    # The count is of questions lost, each once; a problem that loses none is still listed.
    assert (result.skipped.count, len(result.samples)) == (lost, 1 - lost)
    assert len(result.skipped.skipped) == 1 and match.split(" (")[0].replace("\\", "") in result.skipped.summary()


def test_each_bad_question_counts_once(tmp_path):
    """Seven bad questions among thirteen, each broken one way: each costs one skip, not two. Every
    problem is still listed (left-over annotations too), so problems outnumber lost questions."""
    questions = [question(i) for i in range(1, 13)]
    annotations = [annotation(i) for i in range(1, 13)]
    questions[1] = question(1)  # id 2 changed to a repeat of 1: its annotation (id 2) is left over
    questions.append(question(3))  # a repeated question with a repeated annotation
    annotations.append(annotation(3))
    del annotations[3]["answers"]  # id 4: annotation without answers
    annotations[4]["answers"] = []  # id 5: no answers
    questions[5]["question"] = ""  # id 6: empty question, and a bad annotation as well
    annotations[5]["answers"] = "cat"
    del questions[6]["question_id"]  # id 7: question without an id (its annotation is left over)
    del annotations[7]  # id 8: no annotation
    q, a = vqa_pair(tmp_path, questions, annotations)
    result = read_vqa_v2(q, a, check_images=False, on_bad_sample="skip")
    assert sorted(s.question_id for s in result.samples) == [1, 3, 9, 10, 11, 12]
    assert result.skipped.count == 7 == len(questions) - len(result.samples)  # 7 lost, each counted once
    assert "skipped 7 bad samples (11 problems found)" in result.skipped.summary()


def test_bad_question_does_not_also_orphan_its_annotation(tmp_path):
    q, a = vqa_pair(tmp_path, [question(1, text=""), question(2)], [annotation(1), annotation(2)])
    result = read_vqa_v2(q, a, check_images=False, on_bad_sample="skip")
    assert [s.question_id for s in result.samples] == [2]
    assert result.skipped.count == 1 and "empty question" in result.skipped.summary()


# --- common machinery --------------------------------------------------------------------------

def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "q.json"
    path.write_text('{\n  "questions": [\n    {"question_id": 1,}\n  ]\n}\n')
    with pytest.raises(DataError, match=r"line 3, column 23") as info:
        read_vqa_v2(path)
    assert info.value.line == 3 and str(path) in str(info.value)


def test_non_utf8_names_byte_offset(tmp_path):
    path = tmp_path / "q.json"
    path.write_bytes(b'{"questions": [\n{"question": "caf\xe9"}]}')
    with pytest.raises(DataError, match=r"not valid UTF-8: byte 0xe9 at byte offset 33") as info:
        read_json(path)
    assert info.value.line == 2


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "q.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"a": 1}).encode())
    assert read_json(path) == {"a": 1}


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found") as info:
        read_vqa_v2(tmp_path / "nope.json")
    assert info.value.path == str(tmp_path / "nope.json")
    with pytest.raises(DataError, match="file not found"):
        read_vqa_jsonl(tmp_path / "nope.jsonl")


def test_iter_jsonl_lines_and_errors(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n   \n[2]\n{"b": \n\xff\n')
    rows = iter_jsonl(path)
    assert next(rows) == (1, {"a": 1}) and next(rows) == (4, [2])
    with pytest.raises(DataError, match=r"line 5, column 7") as info:
        next(rows)
    assert info.value.line == 5
    log = SkipLog("skip")
    assert list(iter_jsonl(path, log)) == [(1, {"a": 1}), (4, [2])]
    assert log.count == 2 and "byte 0xff at byte offset 25" in log.summary()


def test_skip_log_policy_and_reports():
    with pytest.raises(ConfigError, match="on_bad_sample.*'ignore'"):
        SkipLog("ignore")
    with pytest.raises(DataError, match="boom"):
        SkipLog("error").add(DataError("boom"))
    log = SkipLog("skip")
    assert log.summary() == "no bad samples skipped"
    for i in range(7):
        log.add(DataError(f"reason {i}", path="f.jsonl", line=i + 1))
    text = log.summary(max_reasons=3)
    assert "skipped 7 bad samples" in text and "f.jsonl:3: reason 2" in text
    assert "reason 3" not in text and "and 4 more" in text
    assert log.as_dict(max_reasons=2) == {"count": 7, "reasons": ["f.jsonl:1: reason 0", "f.jsonl:2: reason 1"]}
    assert json.dumps(log.as_dict())  # fit for a run's JSON record


def test_reader_validates_policy(tmp_path):
    with pytest.raises(ConfigError, match="on_bad_sample"):
        read_vqa_v2(tmp_path / "q.json", on_bad_sample="warn")


def test_check_question():
    assert check_question("  Why?\n") == "Why?"
    with pytest.raises(DataError, match="question too long: 11 characters"):
        check_question("x" * 11, max_chars=10)


def test_check_question_refuses_text_that_utf8_cannot_hold(tmp_path):
    """A byte a command line could not decode (kept by Python as a surrogate) or a lone surrogate from a
    JSON escape: a DataError naming the byte, where a tokenizer would raise a TypeError."""
    undecodable = b"What is \xff?".decode("utf-8", "surrogateescape")
    with pytest.raises(DataError, match="not valid text: a byte 0xff that is not UTF-8 at character 9") as info:
        check_question(undecodable)
    assert info.value.field == "question"
    with pytest.raises(DataError, match="lone surrogate U\\+D800 at character 1"):
        check_question("\ud800?")
    touch_images(tmp_path, "a.jpg")
    path = tmp_path / "vqa.jsonl"
    path.write_text('{"image": "a.jpg", "question": "\\udcff?"}\n{"image": "a.jpg", "question": "Ok?"}\n')
    result = read_vqa_jsonl(path, on_bad_sample="skip")
    assert [s.question for s in result.samples] == ["Ok?"] and "vqa.jsonl:1 [question]: not valid text" in \
        result.skipped.summary()
    from vlfuse.data.formats.fields import Where, text  # captions, answers and labels: the same check

    with pytest.raises(DataError, match=r"c.json \[images\[0\].raw\]: not valid text: a lone surrogate U\+DC00"):
        text("a \udc00 dog", Where(Path("c.json"), field="images[0].raw"), "sentence")


# --- JSONL / CSV -------------------------------------------------------------------------------

def jsonl(path: Path, *records) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def test_jsonl_happy_path(tmp_path):
    touch_images(tmp_path / "pics", "a.jpg", "b.png")
    path = jsonl(tmp_path / "vqa.jsonl",
                 {"image": "pics/a.jpg", "question": "Colour?", "answer": "red"},
                 "",
                 {"image": "pics/b.png", "question": "How many?", "answers": ["2", "two", "2"],
                  "question_id": "q-7", "image_id": 3, "question_type": "how many",
                  "answer_type": "number", "source": "handmade"})
    first, second = read_vqa_jsonl(path).samples
    assert (first.question_id, first.image_id) == ("line-1", "pics/a.jpg")
    assert first.image_path == tmp_path / "pics" / "a.jpg"
    assert (first.answer, first.answers) == ("red", ("red",))
    assert (second.question_id, second.image_id, second.answer) == ("q-7", 3, "2")
    assert (second.question_type, second.answer_type) == ("how many", "number")
    assert second.extra == {"source": "handmade"}


def test_jsonl_image_root(tmp_path):
    root = touch_images(tmp_path / "root", "a.jpg")
    touch_images(root / "sub", "b.jpg")
    path = jsonl(tmp_path / "vqa.jsonl", {"image": "a.jpg", "question": "Q?"},
                 {"image": "./sub/b.jpg", "question": "Q?"})
    first, second = read_vqa_table(path, image_root=root).samples
    assert first.image_path == root / "a.jpg" and second.image_path == root / "sub" / "b.jpg"
    assert first.answer is None  # unlabelled rows are allowed (test-style)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize("image", ["../secret.jpg", "sub/../../secret.jpg", "ABSOLUTE", "/etc/passwd", "sub//b.jpg"])
def test_table_image_paths_stay_inside_the_image_folder(tmp_path, suffix, image):
    """As the COCO, GQA, NLVR and Karpathy readers do: `..` and absolute paths are refused, even to a file
    that exists, with one error naming the file, line and field."""
    root = touch_images(tmp_path / "root", "a.jpg")
    touch_images(root / "sub", "b.jpg")
    secret = touch_images(tmp_path, "secret.jpg") / "secret.jpg"
    image = str(secret) if image == "ABSOLUTE" else image
    path = tmp_path / f"vqa{suffix}"
    if suffix == ".jsonl":
        jsonl(path, {"image": "a.jpg", "question": "Fine?"}, {"image": image, "question": "Q?"})
    else:
        write_csv(path, f"image,question\na.jpg,Fine?\n{image},Q?\n")
    with pytest.raises(DataError, match="image must be a relative path inside the image folder") as info:
        read_vqa_table(path, image_root=root)
    line = 2 if suffix == ".jsonl" else 3  # the CSV's header is line 1
    assert (info.value.path, info.value.line, info.value.field) == (str(path), line, "image")
    assert "\n" not in str(info.value)
    result = read_vqa_table(path, image_root=root, on_bad_sample="skip")
    assert [s.image_path for s in result.samples] == [root / "a.jpg"] and result.skipped.count == 1


def test_jsonl_explicit_ids_never_collide_with_line_ids(tmp_path):
    """Line 1 has no question_id, line 2 says 1 (the line number that line 1 used to get): both are kept."""
    touch_images(tmp_path, "a.jpg")
    path = jsonl(tmp_path / "vqa.jsonl", {"image": "a.jpg", "question": "First?"},
                 {"image": "a.jpg", "question": "Second?", "question_id": 1},
                 {"image": "a.jpg", "question": "Third?", "question_id": "2"},
                 {"image": "a.jpg", "question": "Fourth?"})
    result = read_vqa_jsonl(path)
    assert [s.question_id for s in result.samples] == ["line-1", 1, "2", "line-4"] and result.skipped.count == 0
    csv_path = write_csv(tmp_path / "vqa.csv", "image,question,question_id\na.jpg,First?,\na.jpg,Second?,2\n")
    assert [s.question_id for s in read_vqa_csv(csv_path).samples] == ["line-2", 2]
    # The one form explicit ids cannot take is the form given to lines without one.
    reserved = jsonl(tmp_path / "reserved.jsonl", {"image": "a.jpg", "question": "Q?", "question_id": "line-7"})
    with pytest.raises(DataError, match="question_id 'line-7' has the form given to lines without one") as info:
        read_vqa_jsonl(reserved)
    assert info.value.line == 1 and info.value.field == "question_id"


@pytest.mark.parametrize("line, match", [
    ('{"image": "a.jpg", "question": "Q?",}', "malformed JSON at line 2, column 37"),
    ('[1, 2]', "expected an object, got list"),
    ({"question": "Q?"}, "missing field 'image'"),
    ({"image": "a.jpg"}, "missing field 'question'"),
    ({"image": "a.jpg", "question": ""}, "empty question"),
    ({"image": "missing.jpg", "question": "Q?"}, "image not found"),
    ({"image": 3, "question": "Q?"}, "image must be a non-empty path"),
    ({"image": "a.jpg", "question": "Q?", "answer": 1}, "answer must be a string"),
    ({"image": "a.jpg", "question": "Q?", "answers": "cat"}, "answers must be a list of strings"),
    ({"image": "a.jpg", "question": "Q?", "question_id": [1]}, "question_id must be an integer or a string"),
    ({"image": "a.jpg", "question": "Q?", "question_id": "line-1"}, "question_id 'line-1' has the form"),
])
def test_jsonl_errors_name_line_and_skip(tmp_path, line, match):
    touch_images(tmp_path, "a.jpg")
    path = jsonl(tmp_path / "vqa.jsonl", {"image": "a.jpg", "question": "Fine?"}, line)
    assert_reported_on_line_2(path, match)


def test_jsonl_duplicate_explicit_ids(tmp_path):
    touch_images(tmp_path, "a.jpg")
    path = jsonl(tmp_path / "vqa.jsonl", {"image": "a.jpg", "question": "Fine?", "question_id": 7},
                 {"image": "a.jpg", "question": "Again?", "question_id": 7})
    assert_reported_on_line_2(path, "duplicate question_id 7")


def assert_reported_on_line_2(path: Path, match: str) -> None:
    """Line 2 of `path` is bad: raised naming file and line, or skipped alone."""
    with pytest.raises(DataError, match=match) as info:
        read_vqa_jsonl(path)
    assert info.value.line == 2 and str(path) in str(info.value)
    result = read_vqa_jsonl(path, on_bad_sample="skip")
    assert [s.question for s in result.samples] == ["Fine?"] and result.skipped.count == 1


def test_jsonl_non_utf8_line_is_a_bad_sample(tmp_path):
    touch_images(tmp_path, "a.jpg")
    path = tmp_path / "vqa.jsonl"
    path.write_bytes(b'{"image": "a.jpg", "question": "\xc3\x28?"}\n{"image": "a.jpg", "question": "Ok?"}\n')
    with pytest.raises(DataError, match="byte 0xc3 at byte offset 32"):
        read_vqa_jsonl(path)
    result = read_vqa_jsonl(path, on_bad_sample="skip")
    assert [s.question_id for s in result.samples] == ["line-2"] and result.skipped.count == 1


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_csv_happy_path(tmp_path):
    touch_images(tmp_path, "a.jpg", "b.jpg")
    path = write_csv(tmp_path / "vqa.csv",
                     "image,question,answer,answers,question_id,image_id\r\n"
                     "a.jpg,\"Is it red, or blue?\",red,,,\r\n"
                     "b.jpg,How many?,,2|two|2,17,5\r\n")
    first, second = read_vqa_table(path).samples
    assert (first.question, first.answer, first.question_id, first.image_id) == \
        ("Is it red, or blue?", "red", "line-2", "a.jpg")
    assert (second.answer, second.answers, second.question_id, second.image_id) == \
        ("2", ("2", "two", "2"), 17, 5)


@pytest.mark.parametrize("row, match", [
    ("a.jpg,,x", "empty question"),
    ("nope.jpg,Q?,x", "image not found"),
    ("a.jpg,Q?,x,surplus", "more cells than the header"),
    (",Q?,x", "image must be a non-empty path"),
    ("a.jpg", "missing field 'question'"),
])
def test_csv_errors_name_row_and_skip(tmp_path, row, match):
    touch_images(tmp_path, "a.jpg")
    path = write_csv(tmp_path / "vqa.csv", f"image,question,answer\na.jpg,Fine?,y\n{row}\n")
    with pytest.raises(DataError, match=match) as info:
        read_vqa_csv(path)
    assert info.value.line == 3 and f"{path}:3" in str(info.value)
    result = read_vqa_csv(path, on_bad_sample="skip")
    assert [s.question for s in result.samples] == ["Fine?"] and result.skipped.count == 1


def test_csv_header_must_name_columns(tmp_path):
    path = write_csv(tmp_path / "vqa.csv", "img,question\na.jpg,Q?\n")
    with pytest.raises(DataError, match="lacks column.*'image'") as info:
        read_vqa_csv(path, on_bad_sample="skip")
    assert info.value.line == 1


def test_csv_non_utf8(tmp_path):
    path = tmp_path / "vqa.csv"
    path.write_bytes(b"image,question\na.jpg,caf\xe9?\n")
    with pytest.raises(DataError, match="byte 0xe9 at byte offset 24") as info:
        read_vqa_csv(path)
    assert info.value.line == 2


def test_table_rejects_other_suffixes(tmp_path):
    with pytest.raises(DataError, match="unsupported table format '.txt'"):
        read_vqa_table(tmp_path / "vqa.txt")


# --- fuzzing -----------------------------------------------------------------------------------

KEYS = ["questions", "annotations", "data_subtype", "question_id", "image_id", "question", "answers",
        "answer", "multiple_choice_answer", "question_type", "answer_type", "image"]
scalars = st.none() | st.booleans() | st.integers(-2, 2**40) | st.floats(allow_nan=True) | \
    st.text(max_size=12) | st.sampled_from(KEYS)
json_ish = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4),
                                                               inner, max_size=5),
    max_leaves=20)
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def only_clean_outcomes(call):
    """Calling a reader on garbage may return or raise one of our errors, nothing else."""
    for policy in ("error", "skip"):
        try:
            assert isinstance(call(policy), ReadResult)
        except VLFuseError:
            pass


@FUZZ
@given(data=st.binary(max_size=200) | json_ish.map(lambda o: json.dumps(o).encode()))
def test_fuzz_vqa_v2(tmp_path, data):
    touch_images(tmp_path, "COCO_x_000000000001.jpg", "2.png")
    (tmp_path / "q.json").write_bytes(data)
    only_clean_outcomes(lambda p: read_vqa_v2(tmp_path / "q.json", on_bad_sample=p))


@FUZZ
@given(questions=json_ish, annotations=json_ish)
def test_fuzz_vqa_v2_structured(tmp_path, questions, annotations):
    q = write_json(tmp_path / "q.json", {"data_subtype": "x", "questions": [questions, question(1)]})
    a = write_json(tmp_path / "a.json", {"annotations": [annotations, annotation(1)]})
    touch_images(tmp_path, "COCO_x_000000000001.jpg")
    only_clean_outcomes(lambda p: read_vqa_v2(q, a, on_bad_sample=p))
    result = read_vqa_v2(q, a, on_bad_sample="skip")
    assert len(result.samples) + result.skipped.count == 2  # every question kept or counted lost, once


@FUZZ
@given(lines=st.lists(st.binary(max_size=60) | json_ish.map(json.dumps).map(str.encode), max_size=4))
def test_fuzz_jsonl_and_csv(tmp_path, lines):
    touch_images(tmp_path, "a.jpg")
    data = b"\n".join(lines)
    for name in ("t.jsonl", "t.csv"):
        (tmp_path / name).write_bytes(data)
        only_clean_outcomes(lambda p: read_vqa_table(tmp_path / name, on_bad_sample=p))
