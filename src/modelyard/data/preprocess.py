"""Preprocessors turn raw examples into tensors, learn their statistics on the training split only,
and save to plain JSON inside the model artifact so a saved model predicts without its training data."""

from __future__ import annotations

import difflib
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from PIL import Image

from modelyard.data.base import RawData
from modelyard.data.datasets import ArrayDataset, AugmentedDataset, ImageFileDataset
from modelyard.errors import DataError
from modelyard.registry import Registry

PREPROCESSORS: Registry = Registry("preprocessor")
IMAGE_EXTENSIONS = {ext for ext, fmt in Image.registered_extensions().items()}


def preprocessor_from_json(d: dict) -> Any:
    """The preprocessor a model folder's `preprocessing` describes.

    Raises:
        DataError: an unknown kind. KeyError, TypeError or ValueError: a field is missing or malformed.
    """
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in PREPROCESSORS:
        raise DataError(f"kind {kind!r} is unknown; known kinds: {', '.join(PREPROCESSORS.names())}")
    return PREPROCESSORS.get(kind).obj.from_json(d)


def _stat_sample(n: int, limit: int, seed: int = 0) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


# ---------------------------------------------------------------- images


@PREPROCESSORS.register("image")
class ImagePreprocessor:
    """Images as (C, H, W) floats: resized, scaled to [0, 1] by `pixel_max`, standardised per channel."""

    kind = "image"

    def __init__(self, *, size, channels, pixel_max, mean, std, augment=None):
        self.size = tuple(size)
        self.channels = int(channels)
        self.pixel_max = float(pixel_max)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.augment = augment or {}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    @classmethod
    def fit(cls, raw: RawData, cfg) -> "ImagePreprocessor":
        size = cfg.image.size if cfg.image.size is not None else raw.options["size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        channels = cfg.image.channels or raw.options["channels"]
        pre = cls(size=size, channels=channels, pixel_max=raw.options["pixel_max"],
                  mean=[0.0] * channels, std=[1.0] * channels, augment=cfg.image.augment.model_dump())
        if cfg.image.normalize:
            sample = raw.take(_stat_sample(len(raw), 2000))
            x = pre.transform(sample.x)  # (N, C, H, W), unnormalised so far
            pre.mean = x.mean(dim=(0, 2, 3)).tolist()
            pre.std = [max(s, 1e-6) for s in x.std(dim=(0, 2, 3)).tolist()]
        return pre

    def to_json(self) -> dict:
        return {"kind": self.kind, "size": list(self.size), "channels": self.channels, "pixel_max": self.pixel_max,
                "mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, d: dict) -> "ImagePreprocessor":
        pre = cls(size=d["size"], channels=d["channels"], pixel_max=d["pixel_max"], mean=d["mean"], std=d["std"])
        if len(pre.size) != 2 or min(pre.size) < 1 or not all(isinstance(v, int) for v in pre.size):
            raise ValueError(f"size must be [height, width] in pixels, got {d['size']!r}")
        if pre.channels not in (1, 3) or len(pre.mean) != pre.channels or len(pre.std) != pre.channels:
            raise ValueError(f"mean and std need one value per channel ({pre.channels}), got {pre.mean} and {pre.std}")
        if not all(np.isfinite(pre.mean)) or not all(np.isfinite(s) and s > 0 for s in pre.std) or pre.pixel_max <= 0:
            raise ValueError("mean, std and pixel_max must be finite, std and pixel_max above 0")
        return pre

    def load_image(self, path: str | Path) -> torch.Tensor:
        try:
            with open_image(path) as im:
                return self._from_pil(im)
        except DataError:
            raise
        except Exception as exc:  # Pillow raises many types for damaged files
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"cannot read image {path} ({detail}); this model reads image files: remove or replace "
                            "it") from None

    def transform(self, x) -> torch.Tensor:
        """Arrays (N, H, W) or (N, H, W, C) in source units, PIL images, or image paths -> (N, C, H, W)."""
        if isinstance(x, list) and x and not isinstance(x[0], np.ndarray):
            if isinstance(x[0], Image.Image):
                return torch.stack([self._from_pil(im) for im in x])
            return torch.stack([self.load_image(p) for p in x])
        arr = torch.as_tensor(np.asarray(x), dtype=torch.float32) / self.pixel_max
        if arr.dim() == 3:
            arr = arr.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
        elif arr.dim() == 4 and arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
            arr = arr.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        elif arr.dim() != 4:
            raise DataError(f"image arrays must be shaped (N, H, W) or (N, H, W, C), got {tuple(arr.shape)}")
        if arr.shape[1] != self.channels:
            arr = arr.mean(dim=1, keepdim=True) if self.channels == 1 else arr.expand(-1, 3, -1, -1)
        if tuple(arr.shape[2:]) != self.size:
            arr = torch.nn.functional.interpolate(arr, size=self.size, mode="bilinear", antialias=True)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (arr - mean) / std

    def _from_pil(self, im: Image.Image) -> torch.Tensor:
        im = im.convert("L" if self.channels == 1 else "RGB")
        if im.size != (self.size[1], self.size[0]):
            im = im.resize((self.size[1], self.size[0]), Image.BILINEAR)
        t = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)
        t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)  # (H, W, C) -> (C, H, W)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (t - mean) / std

    def dataset(self, raw: RawData, targets: np.ndarray, *, train: bool):
        if isinstance(raw.x, list):
            ds = ImageFileDataset(raw.x, targets, self.load_image)
        else:
            ds = ArrayDataset(self.transform(raw.x), targets)
        if train and (self.augment.get("random_crop") or self.augment.get("hflip")):
            from torchvision.transforms import v2

            steps = []
            if self.augment.get("random_crop"):
                steps.append(v2.RandomCrop(self.size, padding=self.augment.get("crop_padding", 2)))
            if self.augment.get("hflip"):
                steps.append(v2.RandomHorizontalFlip())
            ds = AugmentedDataset(ds, v2.Compose(steps))
        return ds

    def read_inputs(self, path: Path) -> tuple[list[Path], list[str]]:
        if path.is_file():
            return [path], [path.name]
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"no images found under {path}; expected files Pillow reads ({', '.join(sorted(IMAGE_EXTENSIONS)[:8])}, ...)")
        return files, [str(p.relative_to(path)) for p in files]


# ---------------------------------------------------------------- sequences


@PREPROCESSORS.register("sequence")
class SequencePreprocessor:
    """Fixed-length numeric sequences as (1, L) floats, standardised with the training mean and std."""

    kind = "sequence"

    def __init__(self, *, length: int, mean: float, std: float):
        self.length, self.mean, self.std = int(length), float(mean), float(std)

    @property
    def input_shape(self) -> tuple[int, int]:
        return (1, self.length)

    @classmethod
    def fit(cls, raw: RawData, cfg) -> "SequencePreprocessor":
        x = np.asarray(raw.x, dtype=np.float64)
        return cls(length=x.shape[1], mean=x.mean(), std=max(x.std(), 1e-6))

    def to_json(self) -> dict:
        return {"kind": self.kind, "length": self.length, "mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, d: dict) -> "SequencePreprocessor":
        return cls(length=d["length"], mean=d["mean"], std=d["std"])

    def transform(self, x) -> torch.Tensor:
        if isinstance(x, pd.DataFrame):
            x = _numeric_frame(x, "input")
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.length:
            raise DataError(f"sequences must be shaped (N, {self.length}), got {arr.shape}")
        return ((torch.from_numpy(arr) - self.mean) / self.std).unsqueeze(1)  # (N, L) -> (N, 1, L)

    def dataset(self, raw: RawData, targets: np.ndarray, *, train: bool):
        return ArrayDataset(self.transform(raw.x), targets)

    def read_inputs(self, path: Path):
        frame = read_csv(path, header=None)
        if not _row_is_numeric(frame.iloc[0]):
            frame = frame.iloc[1:].reset_index(drop=True)  # a header row
        if frame.shape[1] != self.length:
            raise DataError(f"{path}: expected {self.length} numeric columns per row, found {frame.shape[1]}")
        return _numeric_frame(frame, str(path)), [str(i + 1) for i in range(len(frame))]


# ---------------------------------------------------------------- tables


@PREPROCESSORS.register("tabular")
class TabularPreprocessor:
    """Table rows as floats: numeric columns standardised, categorical columns one-hot.

    Statistics come from the training split. Unknown categories at prediction time become all zeros.
    """

    kind = "tabular"

    def __init__(self, *, numeric: dict[str, dict], categorical: dict[str, dict], impute: bool):
        self.numeric, self.categorical, self.impute = numeric, categorical, impute

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def input_shape(self) -> tuple[int]:
        return (len(self.numeric) + sum(len(c["categories"]) for c in self.categorical.values()),)

    @classmethod
    def fit(cls, raw: RawData, cfg) -> "TabularPreprocessor":
        frame: pd.DataFrame = raw.x
        numeric, categorical = {}, {}
        for col in frame.columns:
            if col in raw.options["categorical"]:
                values = frame[col].dropna().astype(str)
                mode = values.mode().iloc[0] if len(values) else ""
                categorical[col] = {"categories": sorted(values.unique().tolist()), "fill": mode}
            else:
                v = frame[col].astype(float)
                std = float(v.std(ddof=0)) if v.notna().sum() > 1 else 1.0
                numeric[col] = {"mean": float(v.mean()), "std": std if std > 0 else 1.0, "fill": float(v.median())}
        return cls(numeric=numeric, categorical=categorical, impute=cfg.nan_policy == "impute")

    def to_json(self) -> dict:
        return {"kind": self.kind, "numeric": self.numeric, "categorical": self.categorical, "impute": self.impute}

    @classmethod
    def from_json(cls, d: dict) -> "TabularPreprocessor":
        return cls(numeric=d["numeric"], categorical=d["categorical"], impute=d["impute"])

    def transform(self, frame: pd.DataFrame, where: str = "input") -> torch.Tensor:
        """Rows -> (N, F) floats. A frame that `read_inputs` read from a file names that file and its lines in errors.

        Raises:
            DataError: a trained column is missing, or a cell is empty, not a number, infinite or too large.
        """
        where = frame.attrs.get("source", where)
        first_line = frame.attrs.get("first_line")
        place = (lambda i: f"line {i + first_line}") if first_line else (lambda i: f"row {i + 1}")  # noqa: E731
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise DataError(f"{where}: missing column(s) {missing}; the model was trained on {self.columns}: add them")
        parts = []
        for col, st in self.numeric.items():
            v = pd.to_numeric(frame[col], errors="coerce")
            bad = v.isna() & frame[col].notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(f"{where}: column {col!r} {place(row)} holds {frame[col].iloc[row]!r}, not a number; "
                                "fix the value")
            check_finite(v, col, where, place)
            v = self._fill(v, col, st["fill"], where, place)
            with np.errstate(over="ignore"):
                scaled = (v.to_numpy(np.float32) - st["mean"]) / st["std"]
            if not np.isfinite(scaled).all():
                row = int(np.flatnonzero(~np.isfinite(scaled))[0])
                raise DataError(f"{where}: column {col!r} {place(row)} holds {v.iloc[row]:g}, which overflows this "
                                f"model's scaling (mean {st['mean']:.4g}, std {st['std']:.4g}); fix the value if it is "
                                "wrong, or restore the model folder if its preprocessing was edited")
            parts.append(scaled[:, None])
        for col, st in self.categorical.items():
            v = self._fill(frame[col], col, st["fill"], where, place).astype(str)
            # unseen categories as missing first: pandas will refuse values outside the given categories
            cats = pd.Categorical(v.where(v.isin(st["categories"])), categories=st["categories"])
            onehot = np.zeros((len(v), len(st["categories"])), dtype=np.float32)
            known = cats.codes >= 0
            onehot[np.flatnonzero(known), cats.codes[known]] = 1.0
            parts.append(onehot)
        return torch.from_numpy(np.concatenate(parts, axis=1) if parts else np.zeros((len(frame), 0), np.float32))

    def _fill(self, v: pd.Series, col: str, fill, where: str, place) -> pd.Series:
        if v.isna().any():
            if not self.impute:
                row = int(np.flatnonzero(v.isna().to_numpy())[0])
                raise DataError(f"{where}: column {col!r} {place(row)} is empty; fill it in "
                                "(this model was trained with data.nan_policy other than 'impute')")
            v = v.fillna(fill)
        return v

    def dataset(self, raw: RawData, targets: np.ndarray, *, train: bool):
        return ArrayDataset(self.transform(raw.x, "training data"), targets)

    def read_inputs(self, path: Path):
        frame = read_csv(path)
        frame.attrs.update(source=str(path), first_line=2)  # errors name the file's lines; the header is line 1
        return frame, [str(i + 1) for i in range(len(frame))]


# ---------------------------------------------------------------- helpers


MAX_IMAGE_PIXELS = 50_000_000  # 7,000 x 7,000: a larger image is a mistake or a decompression bomb


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """Open an image, refusing one of more than MAX_IMAGE_PIXELS before any pixel is decoded: a small file can
    decode to gigabytes (a decompression bomb).

    Raises:
        DataError: the image is over the limit.
    """
    too_big = (f"image {path} is over the limit of {MAX_IMAGE_PIXELS:,} pixels (a decompression bomb, or an image "
               "to shrink first); remove it or resize it")
    try:
        with warnings.catch_warnings():  # Pillow warns from 89 megapixels; the explicit limit below is lower
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError:
        raise DataError(f"{too_big} ({MAX_IMAGE_PIXELS:,} pixels at most)") from None
    with im:
        width, height = im.size
        if width * height > MAX_IMAGE_PIXELS:
            raise DataError(f"{too_big}: it is {width}x{height} = {width * height:,} pixels")
        yield im


MAX_ABS_FEATURE = 1e38  # float32 ends at 3.4e38: a larger feature is infinite inside the model


def check_finite(values: pd.Series, col: str, where: str, place) -> None:
    """Fail on an infinite or too large number in a numeric column; `place(i)` names row i (a line or a row).

    Empty cells (NaN) are left to the missing-value policy.
    """
    x = values.to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        infinite = np.isinf(x)
        huge = np.isfinite(x) & (np.abs(x) > MAX_ABS_FEATURE)
    if infinite.any():
        i = int(np.flatnonzero(infinite)[0])
        raise DataError(f"{where}: column {col!r} {place(i)} holds {x[i]}, not a finite number; fix or remove "
                        "the value")
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        raise DataError(f"{where}: column {col!r} {place(i)} holds {x[i]:g}, too large for a feature (keep values "
                        f"within +-{MAX_ABS_FEATURE:g}); fix the value, or rescale the column (e.g. take its log)")


def missing_data_hint(path: Path) -> str:
    """How to make a missing data file: the make_data.py script beside the examples, when there is one."""
    for folder in list(path.parents)[:3]:
        script = folder / "make_data.py"
        if script.is_file():
            return f"; create it with `python {script}`"
    return "; check data.source (a relative path is read from the config file's folder)"


def read_csv(path: Path, **kw) -> pd.DataFrame:
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a CSV file; point at the CSV file itself")
    if not path.is_file():
        raise DataError(f"CSV file {path} not found{missing_data_hint(path)}")
    try:
        frame = pd.read_csv(path, **kw)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; expected a header row and at least one data row") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: {non_utf8_line(path)}") from None
    except pd.errors.ParserError as exc:
        detail = " ".join(str(exc).split())
        raise DataError(f"{path}: cannot parse as CSV ({detail}); every row needs as many fields as the header, "
                        "and quotes must be closed") from None
    if frame.empty:
        raise DataError(f"{path} has no data rows; add rows below the header")
    return frame


def require_column(frame: pd.DataFrame, col: str, path: Path, role: str = "") -> None:
    """Fail, naming the closest column, when a configured column is not in the file."""
    if col not in frame.columns:
        close = difflib.get_close_matches(col, [str(c) for c in frame.columns], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(f"{path}: no column {col!r}{role and ' for ' + role}.{hint} Columns: {list(frame.columns)}")


def split_column_values(frame: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """Each row's split from a train/val/test column, checked."""
    require_column(frame, col, path, "data.split_column")
    split = frame[col].astype(str).str.strip().str.lower().to_numpy()
    unknown = sorted(set(split) - {"train", "val", "test"})
    if unknown:
        raise DataError(f"{path}: column {col!r} holds {unknown}; use only train, val and test")
    return split


def non_utf8_line(path: Path) -> str:
    """Say which line of a file is not UTF-8, and how to fix it."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        import gzip

        data = gzip.decompress(data)
    try:
        data.decode("utf-8")
        return "not valid UTF-8"
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        return (f"line {line} is not valid UTF-8 (byte 0x{data[exc.start]:02x}); re-save the file as UTF-8, e.g. "
                f"iconv -f latin1 -t utf-8")


def _row_is_numeric(row: pd.Series) -> bool:
    return pd.to_numeric(row, errors="coerce").notna().all()


def _numeric_frame(frame: pd.DataFrame, where: str) -> np.ndarray:
    num = frame.apply(pd.to_numeric, errors="coerce")
    bad = num.isna() & frame.notna()
    if bad.to_numpy().any():
        r, c = np.argwhere(bad.to_numpy())[0]
        raise DataError(f"{where}: row {r + 1}, column {c + 1} holds {frame.iat[r, c]!r}, not a number")
    if num.isna().to_numpy().any():
        r, c = np.argwhere(num.isna().to_numpy())[0]
        raise DataError(f"{where}: row {r + 1}, column {c + 1} is empty; every value must be a number")
    return num.to_numpy(np.float32)
