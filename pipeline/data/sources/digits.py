"""scikit-learn's bundled digits: the offline default (1,797 real 8x8 images)."""

from __future__ import annotations

import numpy as np

from pipeline.data.sources.base import ImageSet, SourceData
from pipeline.params.data import DigitsSource


def load_digits(cfg: DigitsSource) -> SourceData:
    """8x8 images with 17 grey levels, scaled to 0..255; no official split."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    keys = np.arange(len(labels), dtype=np.int64)
    return SourceData({"all": ImageSet(images[..., None], labels, keys)},
                      [str(name) for name in bunch.target_names])
