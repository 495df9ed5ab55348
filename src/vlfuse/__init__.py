"""vlfuse: image-text fusion toolkit. Importing the package is light; torch loads on first use."""

__version__ = "0.1.0"

__all__ = ["load", "load_captioner", "__version__"]


def load(model_dir, device: str = "cpu"):
    """Load a saved (or exported) model directory as its task's Python face: a Predictor (`.predict(image,
    question)`), a Captioner (`.caption(image)`), a Chooser (`.choose(image, question, choices)`) or a
    text-to-image Generator."""
    from .predict import load as _load

    return _load(model_dir, device)


def load_captioner(model_dir, device: str = "cpu"):
    """Load a saved captioning model and return a Captioner (`.caption(image)`); `load` does too."""
    from .tasks.captioning.predict import load_captioner as _load

    return _load(model_dir, device)
