"""builtin:digits - scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes, values 0..16)."""

from __future__ import annotations

import numpy as np

from modelyard.data.base import RawData
from modelyard.data.sources import register_source


@register_source("digits", builtin=True, kinds=("image",))
def digits(arg: str, cfg) -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # ships inside scikit-learn: nothing is downloaded
    return RawData(
        x=bunch.images.astype(np.float32),  # (N, 8, 8) in 0..16
        y=bunch.target.astype(str),
        kind="image",
        names=[str(i) for i in range(len(bunch.target))],
        options={"size": (8, 8), "channels": 1, "pixel_max": 16.0},
    )
