"""Loading Hugging Face models from local folders only, for the pretrained encoders and MMBT.

Folders are checked before transformers is asked anything, so a wrong path never looks like a hub
model id; weights load with `local_files_only` and only from safetensors (never a pickle).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from torch import nn

from ..errors import MissingDependencyError, WeightsError

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")  # one file or a sharded set


def check_model_folder(path: str | Path, key: str) -> Path:
    """`path` resolved, if it is a save_pretrained folder with safetensors weights; else a clear error."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{key}: no Hugging Face model folder at {folder} (no config.json there); "
                           "pass a local folder saved with save_pretrained()")
    if not any((folder / name).is_file() for name in SAFE_WEIGHTS):
        raise WeightsError(f"{key}: {folder} has no model.safetensors (vlfuse does not unpickle pytorch_model.bin): "
                           "re-save the model with save_pretrained(folder, safe_serialization=True)")
    return folder.resolve()


@contextmanager
def _quiet_progress():
    """transformers draws a progress bar per load; a CLI loading one small model needs none."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def load_hf_model(folder: Path, what: str, **kwargs) -> tuple[nn.Module, list[str]]:
    """(AutoModel from a checked folder in float32, the parameter names its weights did not cover)."""
    try:
        from transformers import AutoModel
    except ImportError:
        raise MissingDependencyError(f"{what} needs transformers: pip install \"vlfuse[pretrained]\"") from None
    try:
        with _quiet_progress():
            model, info = AutoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                                    output_loading_info=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - bad folders raise OSError, ValueError, SafetensorError...
        raise WeightsError(f"cannot load {what} from {folder} ({type(exc).__name__}: {exc})") from None
    return model.float(), list(info["missing_keys"])  # float32 whatever the checkpoint's dtype


def refuse_missing(missing: list[str], folder: Path) -> None:
    """transformers fills uncovered parameters with random values and only warns: refuse instead."""
    if missing:
        shown = ", ".join(sorted(missing)[:5]) + ("..." if len(missing) > 5 else "")
        raise WeightsError(f"the weights in {folder} do not cover the model (missing {shown}): "
                           "pass a complete save_pretrained folder")
