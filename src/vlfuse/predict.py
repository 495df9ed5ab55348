"""`vlfuse.load(MODEL_DIR)`: the Python face of any saved or exported model, by its task: a Predictor
(vqa, matching, classification: vlfuse.tasks.vqa.predict), a Captioner (vlfuse.tasks.captioning.predict) or a
Chooser (vqa_mc: vlfuse.tasks.vqa_mc.predict);
`load_encoder(MODEL_DIR)`: a retrieval model's encoder (vlfuse.index.encoder), saved or exported.
The one place that tells saved from exported folders, so neither side imports the other."""

from __future__ import annotations

from pathlib import Path

from .errors import DataError
from .index.encoder import RetrievalEncoder
from .models.saved import load_model_dir
from .tasks import saved_task
from .tasks.vqa.predict import Prediction, Predictor

__all__ = ["Prediction", "Predictor", "load", "load_encoder"]


def load(model_dir: str | Path, device: str = "cpu") -> Predictor:
    """Rebuild a saved model directory (config.yaml + model.safetensors + vocabularies), or open an exported
    one (vlfuse export: the same Predictor, run by onnxruntime)."""
    from .export import is_exported

    if is_exported(model_dir):  # written by vlfuse export: answered by onnxruntime
        from .export import load_exported

        return load_exported(model_dir, Predictor, "which answers no questions")
    task = saved_task(model_dir)
    if task == "captioning":  # a Captioner: .caption(image)
        from .tasks.captioning.predict import load_captioner

        return load_captioner(model_dir, device)
    if task == "generation":  # a Generator: vlfuse.tasks.generation.predict.generate(generator, text, n, seed)
        from .tasks.generation.predict import load_generator

        return load_generator(model_dir)
    if task == "vqa_mc":  # a Chooser: .choose(image, question, choices)
        from .tasks.vqa_mc.predict import load as load_chooser

        return load_chooser(model_dir, device)
    if task == "multitask":  # a folder of member models, each its own task's directory
        members = sorted(p.name for p in Path(model_dir).iterdir() if (p / "config.yaml").is_file())
        raise DataError(f"holds a multi-task run: load one of its members, {', '.join(members)} "
                        f"(e.g. {Path(model_dir) / members[0]})" if members else "holds a multi-task run with no member "
                        "models", path=model_dir)
    saved = load_model_dir(model_dir)
    if saved.answers is None:  # a retrieval model answers no questions
        raise DataError(f"holds a {saved.config.task} model, which answers no questions", path=model_dir)
    saved.model.to(device)
    return Predictor(saved)


def load_encoder(model_dir: str | Path, device: str = "cpu") -> RetrievalEncoder:
    """A retrieval model's encoder: a saved one, or an exported one (embeddings from onnxruntime)."""
    from .export import is_exported

    if is_exported(model_dir):
        from .export import load_exported

        return load_exported(Path(model_dir).resolve(), RetrievalEncoder, "not a retrieval model")
    return RetrievalEncoder.load(model_dir, device)
