"""imagefolder:PATH - one sub-folder per class; optional train/, val/, test/ folders above them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from modelyard.data.base import RawData
from modelyard.data.preprocess import IMAGE_EXTENSIONS, missing_data_hint, open_image
from modelyard.data.sources import register_source
from modelyard.errors import DataError

SPLITS = ("train", "val", "test")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


@register_source("imagefolder", kinds=("image",))
def imagefolder(arg: str, cfg) -> RawData:
    root = Path(arg).expanduser()
    if not root.is_dir():
        hint = missing_data_hint(root)
        if "make_data.py" not in hint:
            hint = "; point data.source at a folder holding one sub-folder per class"
        raise DataError(f"image folder {root} not found (data.source: imagefolder:{arg}){hint}")
    split_dirs = [d for d in SPLITS if (root / d).is_dir()]
    if split_dirs and "train" not in split_dirs:
        raise DataError(f"{root} has {split_dirs} folders but no train/; add train/ or use class folders only")
    parts = [(root / d, d) for d in split_dirs] if split_dirs else [(root, None)]
    paths, labels, splits = [], [], []
    for folder, split in parts:
        classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise DataError(f"{folder} has no class sub-folders; put each class's images in a folder named after it")
        for cls in classes:
            files = sorted(p for p in cls.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise DataError(f"class folder {cls} holds no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS)[:6])}, ...); "
                                "add images or remove the folder")
            paths += files
            labels += [cls.name] * len(files)
            splits += [split] * len(files)
    size, colour = _check_images(paths)
    return RawData(
        x=paths,
        y=np.array(labels),
        kind="image",
        split=np.array(splits) if split_dirs else None,
        names=[str(p.relative_to(root)) for p in paths],
        options={"size": size, "channels": 3 if colour else 1, "pixel_max": 1.0},
    )


def _check_images(paths: list[Path]) -> tuple[tuple[int, int], bool]:
    """Open every image once before training so a broken file fails now, by name, not mid-epoch."""
    bad, colour, size = [], False, None
    for p in paths:
        try:
            with open_image(p) as im:
                im.verify()
                mode, (w, h) = im.mode, im.size
        except DataError:
            raise
        except Exception as exc:  # Pillow raises many types for corrupt files
            bad.append(f"{p} ({type(exc).__name__})")
            continue
        size = size or (h, w)
        colour = colour or mode not in GREY_MODES
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DataError(f"{len(bad)} unreadable image(s): {'; '.join(bad[:5])}{more}. Remove or replace them")
    return size, colour
