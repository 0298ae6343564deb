"""Small data sets written to disk, for the examples and the tests (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def write_shapes_folder(root: str | Path, *, per_class: int = 60, size: int = 32, seed: int = 0) -> Path:
    """An image folder of coloured circles, squares and triangles on noisy backgrounds: root/<shape>/<i>.png."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for shape in SHAPES:
        (root / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            bg = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
            im = Image.fromarray(bg)
            draw = ImageDraw.Draw(im)
            r = rng.uniform(0.22, 0.4) * size
            cx, cy = rng.uniform(r, size - r, size=2)
            colour = tuple(int(c) for c in rng.integers(120, 256, size=3))
            if shape == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            elif shape == "square":
                draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
            im.save(root / shape / f"{i:03d}.png")
    return root


def write_wine_csv(path: str | Path) -> Path:
    """scikit-learn's bundled wine table (178 wines, 13 measurements, 3 cultivars) as a CSV with a
    `cultivar` label column and a categorical `colour_band` column derived from colour intensity."""
    import pandas as pd
    from sklearn.datasets import load_wine

    bunch = load_wine(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "cultivar"})
    frame["cultivar"] = frame["cultivar"].map(dict(enumerate(bunch.target_names)))
    frame["colour_band"] = pd.cut(frame["color_intensity"], bins=[0, 3.5, 7, 100], labels=["pale", "medium", "deep"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


TOPICS = {
    "kitchen": "pan oven recipe knife bake stir salt garlic onion simmer".split(),
    "garden": "seed soil water tomato prune compost rose spade weed bloom".split(),
    "network": "router packet server socket latency firewall dns ping cable proxy".split(),
}


def write_text_csv(path: str | Path, *, per_class: int = 20, seed: int = 0) -> Path:
    """A small text classification CSV (columns description, topic): short sentences built from each
    topic's own words mixed with shared filler words, so the task is learnable but not trivial."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    filler = "the a with for and of to new my this".split()
    rows = []
    for topic, words in TOPICS.items():
        for _ in range(per_class):
            n = int(rng.integers(4, 10))
            picks = [rng.choice(words) if rng.random() < 0.6 else rng.choice(filler) for _ in range(n)]
            rows.append({"description": " ".join(picks).capitalize() + ".", "topic": topic})
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
