"""Train on a share of the labels (`data.train_fraction`): a seeded draw of whole images.

Images rather than questions are drawn, so the kept images bring all of their questions and the
rest bring none: the few-label setting where pre-training on unlabelled image-caption pairs helps.
"""

from __future__ import annotations

import random

from ..errors import ConfigError


def check_fraction(fraction: float) -> None:
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"config key 'data.train_fraction' must lie in (0, 1], got {fraction!r}")


def sample_images(samples: list, fraction: float, seed: int) -> list:
    """The samples of round(fraction * images) images (at least one), drawn by `seed`; order kept.

    The draw depends only on the set of image paths and the seed, not on the order the reader
    returned them in. fraction 1.0 returns `samples` itself.
    """
    check_fraction(fraction)
    if fraction == 1.0 or not samples:
        return samples
    images = sorted({str(s.image_path) for s in samples})
    keep = max(1, round(fraction * len(images)))
    chosen = set(random.Random(seed).sample(images, keep))
    return [s for s in samples if str(s.image_path) in chosen]
