"""builtin:mnist1d - the MNIST-1D sequences, generated offline by the `mnist1d` package's defaults
(4,000 train / 1,000 test sequences of length 40, 10 classes)."""

from __future__ import annotations

import numpy as np

from modelyard.data.base import RawData
from modelyard.data.sources import register_source


@register_source("mnist1d", builtin=True, kinds=("sequence",))
def mnist1d(arg: str, cfg) -> RawData:
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()  # make_dataset reseeds NumPy's global generator; leave it as we found it
    try:
        data = make_dataset(get_dataset_args())  # generates from templates; the download URL is never used
    finally:
        np.random.set_state(state)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)  # (N, 40)
    y = np.concatenate([data["y"], data["y_test"]]).astype(str)
    split = np.array(["train"] * len(data["y"]) + ["test"] * len(data["y_test"]))
    return RawData(x=x, y=y, kind="sequence", split=split, names=[str(i) for i in range(len(y))])
