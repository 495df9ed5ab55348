"""`vlfuse eval` reports the official VQA accuracy beside exact match when questions carry human answers."""

import pytest

from vlfuse.tasks.vqa.evaluate import official_vqa_accuracy


def _record(prediction, answers, answer_type):
    return {"prediction": prediction, "answers": answers, "answer_type": answer_type}


def test_official_accuracy_is_the_leave_one_out_mean_per_answer_type():
    records = [
        _record("yes", ["yes"] * 2 + ["no"] * 8, "yes/no"),  # 2 of 10 humans: mean over the 10 subsets = 0.6
        _record("Two", ["2"] * 10, "number"),  # the prediction is normalised as the official script does
        _record("red", ["blue"] * 10, "other"),
        _record("cat", ["cat"], "other"),  # one reference only: exact-match data, left out
    ]
    result = official_vqa_accuracy(records)
    assert result["count"] == 3
    assert result["per_answer_type"] == pytest.approx({"number": 1.0, "other": 0.0, "yes/no": 0.6})
    assert result["accuracy"] == pytest.approx((0.6 + 1.0 + 0.0) / 3)


def test_single_answer_data_has_no_official_accuracy():
    assert official_vqa_accuracy([_record("cat", ["cat"], "other"), _record("dog", [], "other")]) is None


def test_evaluation_in_chunks_of_images_gives_the_same_records_and_metrics(trained_run):
    from vlfuse.data.formats.common import SkipLog
    from vlfuse.data.loading import read_split
    from vlfuse.tasks.vqa.evaluate import evaluate_samples
    from vlfuse.models.saved import load_model_dir

    saved = load_model_dir(trained_run.model_dir)
    samples = read_split(trained_run.config.data, "train").samples  # 14 images: several chunks
    whole, whole_records = evaluate_samples(saved, samples, SkipLog("error"), progress=False)
    chunked, chunked_records = evaluate_samples(saved, samples, SkipLog("error"), progress=False, chunk_images=3)
    assert [r["prediction"] for r in chunked_records] == [r["prediction"] for r in whole_records]
    assert len(chunked_records) == 56
    for metrics in (whole, chunked):
        metrics.pop("ms_per_question")
    assert chunked == whole
