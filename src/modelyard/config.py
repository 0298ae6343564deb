"""The experiment config: one YAML file validated by pydantic, with dotted `--set` overrides.

Errors name the key, the file and line, and the closest valid key, before any data is read.
"""

from __future__ import annotations

import difflib
import reprlib
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelyard.errors import ConfigError
from modelyard.models import MODELS


SEED_MAX = 2**32 - 1  # NumPy's seeds are unsigned 32-bit
MAX_TOKENS = 16_384  # tokens per text or block: beyond this the tokeniser's padding alone runs out of memory
MAX_VOCAB = 1_000_000
MAX_IMAGE_SIDE = 4096


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class SplitConfig(Section):
    val: float = Field(0.15, gt=0, lt=1, description="Fraction held out for validation when the source has no split.")
    test: float = Field(0.15, gt=0, lt=1, description="Fraction held out for testing when the source has no split.")
    seed: int | None = Field(None, ge=0, le=SEED_MAX,
                             description="Seed of the stratified split; defaults to the experiment seed.")

    @model_validator(mode="after")
    def _leaves_training_data(self):
        if self.val + self.test >= 0.9:
            raise ValueError(f"val + test = {self.val + self.test:.2f} leaves too little to train on; keep it under 0.9")
        return self


class AugmentConfig(Section):
    random_crop: bool = Field(False, description="Random crop after padding by crop_padding pixels.")
    crop_padding: int = Field(2, ge=1)
    hflip: bool = Field(False, description="Random horizontal flip (not for digits or text in images).")


class ImageConfig(Section):
    size: int | tuple[int, int] | None = Field(
        None, description="Resize images to this (height, width) or square size; default: the first image's size."
    )
    channels: Literal[1, 3] | None = Field(None, description="1 (grey) or 3 (RGB); default: 3 if any image has colour.")
    normalize: bool = Field(True, description="Standardise with the training split's per-channel mean and std.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @field_validator("size", mode="before")
    @classmethod
    def _size_is_one_or_two_sides(cls, value):
        if value is None:
            return value
        sides = [value] if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(sides, (list, tuple)) or len(sides) not in (1, 2) or \
                not all(isinstance(v, int) and not isinstance(v, bool) for v in sides):
            raise ValueError(f"give one number (a square's side) or [height, width] in pixels, got {value!r}")
        if not all(1 <= v <= MAX_IMAGE_SIDE for v in sides):
            raise ValueError(f"image sides must be from 1 to {MAX_IMAGE_SIDE} pixels, got {value!r}")
        return value


class TokenizerConfig(Section):
    kind: Literal["bpe", "char"] = Field("bpe", description="Byte-level BPE or characters, trained on the training split.")
    vocab_size: int = Field(8000, ge=32, le=MAX_VOCAB, description="BPE: vocabulary size, special tokens included.")
    max_length: int = Field(128, ge=4, le=MAX_TOKENS,
                            description="Tokens per text (the <cls> token included); longer texts are truncated.")
    lowercase: bool = False


class DataConfig(Section):
    source: str = Field(
        ..., description="builtin:digits | builtin:mnist1d | builtin:debian-sections | builtin:debian-descriptions "
        "| imagefolder:PATH | csv:PATH | text:PATH (paths relative to the config file)."
    )
    target: str | None = Field(None, description="CSV: the label column.")
    text: str | None = Field(None, description="CSV: the text column, for text classification.")
    features: list[str] | None = Field(None, description="CSV: feature columns; default: every column but the target.")
    categorical: list[str] = Field(default_factory=list, description="CSV: columns to one-hot even if numeric-looking.")
    split_column: str | None = Field(None, description="CSV: a column of train/val/test naming each row's split.")
    nan_policy: Literal["error", "drop", "impute"] = Field(
        "error", description="Missing values: fail (default), drop the rows, or impute (median / most frequent)."
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    block_size: int = Field(128, ge=2, le=MAX_TOKENS,
                            description="Language modelling (text:PATH): tokens per training example.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")


class EarlyStoppingConfig(Section):
    patience: int | None = Field(None, ge=1, description="Epochs without improvement of `monitor` before stopping.")
    min_delta: float = Field(0.0, ge=0)


class DistillConfig(Section):
    """Knowledge distillation (Hinton et al., 2015): the loss mixes the teacher's softened probabilities and the labels."""

    teacher: str = Field(..., description="The teacher's run directory: a completed torch or hf classifier trained "
                         "on the same labels and inputs (relative paths: from the config file's folder).")
    temperature: float = Field(4.0, gt=0, le=100, description="Softmax temperature T of the soft targets.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of alpha * T^2 * KL(teacher || student); the labels' "
                         "cross-entropy weighs 1 - alpha.")


class PrivacyConfig(Section):
    """Differentially private training (DP-SGD, Abadi et al., 2016) with Opacus: each example's gradient is clipped
    to `max_grad_norm`, Gaussian noise is added, and batches are Poisson-sampled so the accountant's epsilon holds."""

    target_epsilon: float | None = Field(None, gt=0, description="Epsilon to spend over train.epochs; Opacus picks "
                                         "the noise multiplier. Give this or noise_multiplier, not both.")
    noise_multiplier: float | None = Field(None, gt=0, description="Noise standard deviation over max_grad_norm; "
                                           "epsilon then follows from it.")
    delta: float = Field(1e-5, gt=0, lt=1, description="Delta of (epsilon, delta)-DP; below 1 / training examples.")
    max_grad_norm: float = Field(1.0, gt=0, description="Each example's gradient is clipped to this L2 norm.")

    @model_validator(mode="after")
    def _one_noise_setting(self) -> "PrivacyConfig":
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("give exactly one of target_epsilon (e.g. 8) and noise_multiplier (e.g. 1.0)")
        return self


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1, description="Global batch size, split across processes.")
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for AdamW).")
    l1: float = Field(0.0, ge=0, description="L1 penalty added to the loss.")
    schedule: Literal["constant", "step", "cosine", "onecycle"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0, description="Linear warm-up length, for every schedule.")
    step_size: int = Field(10, ge=1, description="Step schedule: epochs between decays.")
    gamma: float = Field(0.1, gt=0, le=1, description="Step schedule: decay factor.")
    grad_clip: float | None = Field(None, gt=0, description="Clip the gradient norm to this value.")
    grad_accum_steps: int = Field(1, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 (or fp16) on a GPU that supports it, fp32 on the CPU."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    monitor: str = Field("val_loss", description="Metric for the best checkpoint and early stopping, e.g. val_accuracy.")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    checkpoint_every_seconds: float | None = Field(
        60.0, gt=0, description="Save `last` at most this often (and always at the end); null: only at the end."
    )
    checkpoint_every_steps: int | None = Field(None, ge=1, description="Also save `last` every N optimizer steps.")
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="Keep an exponential moving average of the weights with this decay per "
        "optimizer step (e.g. 0.99); validation, the best checkpoint and the saved model use the average."
    )
    distill: DistillConfig | None = Field(
        None, description="Train against a teacher run's soft targets as well as the labels (see DistillConfig)."
    )
    privacy: PrivacyConfig | None = Field(
        None, description="Differentially private training with Opacus (see PrivacyConfig)."
    )

    @field_validator("monitor")
    @classmethod
    def _monitor_is_known(cls, value: str) -> str:
        if value not in MONITORS:
            close = difflib.get_close_matches(value, MONITORS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown monitor {value!r}.{hint} Choose one of {', '.join(MONITORS)}")
        return value


MONITORS = ["val_loss", "val_accuracy", "val_f1_macro", "val_perplexity", "train_loss"]


class EvaluateConfig(Section):
    metric: Literal["accuracy", "f1_macro", "balanced_accuracy", "roc_auc_ovr_macro", "log_loss"] = Field(
        "accuracy", description="Headline metric, reported with a bootstrap confidence interval."
    )
    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples for the confidence interval (0: none).")
    ece_bins: int = Field(15, ge=2)


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NAME_MAX = 200  # the run directory is <name>-<17-character stamp>, and a file name has at most 255 bytes
ModelSection = Annotated[Union[tuple(e.config for e in MODELS)], Field(discriminator="name")]


class ExperimentConfig(Section):
    name: str = Field(..., pattern=NAME_PATTERN, max_length=NAME_MAX, description="Names the run directory.")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seeds the split, the initial weights and the batch order.")
    data: DataConfig
    model: ModelSection  # type: ignore[valid-type]
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)


# ---------------------------------------------------------------- loading


def load_config(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment config.

    Relative data paths are resolved against the config file's folder, so a config works from any directory.

    Args:
        source: a YAML file path, or an already-parsed mapping.
        overrides: dotted assignments such as ``"train.lr=0.01"``.

    Raises:
        ConfigError: naming the key, the file and line, and the closest valid key.
    """
    if isinstance(source, dict):
        raw, where, nodes, base = _deepcopy(source), "<dict>", None, Path.cwd()
    else:
        path = Path(source)
        raw, nodes = read_yaml(path, "an experiment", "name, data, model, train, evaluate")
        where, base = str(path), path.resolve().parent
    for item in overrides:
        apply_override(raw, item)
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        from_set = [o.partition("=")[0].strip() for o in overrides]
        raise ConfigError(format_validation_error(exc, raw, where, nodes, from_set)) from None
    return _resolve_paths(cfg, base)


def read_yaml(path: Path, what: str, keys: str) -> tuple[dict, yaml.Node]:
    """A YAML mapping and its node tree (for line numbers in errors); `what`/`keys` word the errors.

    Raises:
        ConfigError: the file is missing, not UTF-8, not YAML, empty, not a mapping, or repeats a key; the
            message names the line.
    """
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not found"
        raise ConfigError(f"{path}: {kind}; pass the path of {what} YAML file (see examples/)")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {non_utf8_message(data, exc)}") from None
    try:
        nodes = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {_yaml_problem(exc)}") from None
    except ValueError:  # PyYAML's int() of a number past Python's 4,300-digit limit
        raise ConfigError(f"{path}: a number has more than {sys.get_int_max_str_digits():,} digits; write a "
                          "shorter one") from None
    if raw is None:
        raise ConfigError(f"{path} is empty; write {what} with the keys {keys} (see examples/)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with keys {keys}, not a {type(raw).__name__}")
    _refuse_duplicate_keys(nodes, path)
    return raw, nodes


def non_utf8_message(data: bytes, exc: UnicodeDecodeError) -> str:
    """Which line of a file is not UTF-8, and how to fix it."""
    line = data[:exc.start].count(b"\n") + 1
    return (f"line {line} is not valid UTF-8 (byte 0x{data[exc.start]:02x}); re-save the file as UTF-8, e.g. "
            "iconv -f latin1 -t utf-8")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's several-line report as one line: where, what, and a hint."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        problem += f", {context} from line {context_mark.line + 1}"
    hint = ("indent with spaces, not tabs" if "\\t" in problem or "\t" in problem
            else "check the indentation, colons and brackets there")
    return f"{where}not valid YAML ({problem}); {hint}"


def _refuse_duplicate_keys(node: yaml.Node | None, path: Path, prefix: str = "",
                           seen_nodes: set[int] | None = None) -> None:
    """PyYAML keeps the last of two equal keys without a word; a repeated key is almost always a mistake.

    Each node is checked once: an alias shares its anchor's node, and nine nested aliases of ten items each (a
    "billion laughs" file of 300 bytes) would otherwise be walked 10**9 times."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if node is None or id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, path, prefix, seen_nodes)
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key, value in node.value:
        name = f"{prefix}{key.value}"
        if key.value in seen:
            raise ConfigError(f"{path}, line {key.start_mark.line + 1}: duplicate key {name!r} (first on line "
                              f"{seen[key.value]}); keep one of them")
        seen[key.value] = key.start_mark.line + 1
        _refuse_duplicate_keys(value, path, f"{name}.", seen_nodes)


def apply_override(raw: dict, item: str) -> None:
    """Apply one `a.b.c=value` override; the value is parsed as YAML (numbers, lists, booleans)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r} must look like section.key=value, e.g. --set train.lr=0.01")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section; set it as --set "
                              f"{'.'.join(parts[:parts.index(part) + 1])}=VALUE")
        node = nxt
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except (yaml.YAMLError, ValueError):  # ValueError: an int past Python's 4,300-digit limit; validation says
        node[parts[-1]] = value


def config_to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def resolve_source(source: str, base: Path) -> str:
    """A `scheme:PATH` data source with a relative PATH made absolute against `base`; builtin sources as they are."""
    scheme, sep, rest = source.partition(":")
    if sep and scheme != "builtin" and rest and not Path(rest).expanduser().is_absolute():
        return f"{scheme}:{(base / rest).resolve()}"
    return source


def _resolve_paths(cfg: ExperimentConfig, base: Path) -> ExperimentConfig:
    cfg.data.source = resolve_source(cfg.data.source, base)
    if cfg.train.distill is not None:
        cfg.train.distill.teacher = str((base / Path(cfg.train.distill.teacher).expanduser()).resolve())
    if cfg.model.pretrained and not cfg.model.pretrained.startswith("builtin:"):
        p = Path(cfg.model.pretrained).expanduser()
        # A relative path that does not exist beside the config may be a Hugging Face model id (org/name).
        if not p.is_absolute() and ((base / p).exists() or not _looks_like_model_id(cfg.model.pretrained)):
            cfg.model.pretrained = str((base / p).resolve())
    return cfg


def _looks_like_model_id(value: str) -> bool:
    return value.count("/") == 1 and not value.startswith((".", "~")) and Path(value).suffix == ""


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


# ---------------------------------------------------------------- error messages


def format_validation_error(exc: ValidationError, raw: dict, where: str, nodes: yaml.Node | None,
                            from_set: list[str] = (), root: type[BaseModel] | None = None) -> str:
    """One line per problem: the dotted key, its line in the file, and what to write instead.

    `root` is the model that was validated (default: ExperimentConfig); it decides which keys are valid where.
    """
    root = root or ExperimentConfig
    lines = [f"{where}: invalid config ({exc.error_count()} problem{'s' * (exc.error_count() > 1)}):"]
    for err in exc.errors():
        loc = ("model", "name") if err["type"] == "union_tag_invalid" else _clean_loc(err["loc"])
        key = ".".join(str(p) for p in loc) or "<top level>"
        line = _line_of(nodes, loc)
        at = f" (line {line})" if line else ""
        if any(key == k or key.startswith(k + ".") for k in from_set):
            at = " (from --set)"
        lines.append(f"  - {key}{at}: {_problem(err, loc, raw, root)}")
    return "\n".join(lines)


SECTION_ERRORS = {"model_type", "model_attributes_type", "dict_type"}


def _problem(err: dict, loc: tuple, raw: dict, root: type[BaseModel], *, hints: bool = True) -> str:
    """What is wrong with one key, and what to write instead (`hints`: point at examples/ for a missing key)."""
    kind, got = err["type"], _short(err.get("input"))
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], raw, root)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.5)
        hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else "."
        return f"unknown key{hint} Valid keys here: {', '.join(allowed)}"
    if kind == "union_tag_invalid" or (loc and loc[-1] == "name" and loc[0] == "model"):
        return MODELS.unknown_message(str(_get(raw, ("model", "name"))))
    if kind == "union_tag_not_found":
        return f"missing 'name'; choose one of {', '.join(MODELS.names())}"
    if kind == "missing":
        how = "; add it (see examples/, or `modelyard config schema` for every key)" if hints else ""
        return f"required key is missing{how}"
    if kind in SECTION_ERRORS:
        named = loc == ("model",) and isinstance(err.get("input"), str) and err["input"] in MODELS
        example = f" such as `model: {{name: {err['input']}}}`" if named else ""
        return f"should be a section of `key: value` lines{example}, got {got}"
    if kind == "string_too_long" and loc == ("name",):
        return f"at most {NAME_MAX} characters (it names the run directory), got {len(err['input'])}"
    if kind == "string_pattern_mismatch" and loc == ("name",):
        return (f"use only letters, digits, '_', '.' and '-', starting with a letter or digit (it names the run "
                f"directory), got {got}")
    if kind == "value_error":  # our own validators say what they got
        return err["msg"].removeprefix("Value error, ")
    return f"{err['msg']} (got {got})"


def one_line_problem(exc: ValidationError, raw: dict, root: type[BaseModel], prefix: str = "", *,
                     hints: bool = True) -> str:
    """The first problem of a validation error as `key: what is wrong` (and how many more there are)."""
    err = exc.errors()[0]
    loc = _clean_loc(err["loc"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{prefix}{'.'.join(map(str, loc))}: {_problem(err, loc, raw, root, hints=hints)}{more}"


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, (dict, list, tuple, set)):  # a few items only: YAML aliases can nest 10**9 of them
        shown = reprlib.Repr()
        shown.maxlevel, shown.maxstring, shown.maxother = 3, limit, limit
        text = shown.repr(value)
    else:
        try:
            text = repr(value)
        except ValueError:  # an int past Python's 4,300-digit limit for str()
            text = f"an integer of about {value.bit_length() * 0.30103:.0f} digits"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _clean_loc(loc: tuple) -> tuple:
    # A discriminated union puts the tag in the path: ('model', 'lenet5', 'channels') -> ('model', 'channels').
    if len(loc) > 1 and loc[0] == "model" and loc[1] in MODELS:
        loc = (loc[0], *loc[2:])
    return tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))


def _get(raw: Any, path: tuple) -> Any:
    for p in path:
        if isinstance(raw, dict) and p in raw:
            raw = raw[p]
        elif isinstance(raw, list) and isinstance(p, int) and p < len(raw):
            raw = raw[p]
        else:
            return None
    return raw


def _allowed_keys(path: tuple, raw: dict, root: type[BaseModel]) -> list[str]:
    cls: Any = root
    for p in path:
        if cls is ExperimentConfig and p == "model":
            name = _get(raw, ("model", "name"))
            cls = MODELS.get(name).config if name in MODELS else None
        else:
            field = cls.model_fields.get(p) if cls else None
            ann = field.annotation if field else None
            cls = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if cls is None:
            return []
    return list(cls.model_fields)


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The line of the key at `loc` in the YAML file, or None when that key is not written there."""
    line = None
    for p in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(p, int) and p < len(node.value):
            node = node.value[p]
            line = node.start_mark.line + 1
            continue
        if not isinstance(node, yaml.MappingNode):
            return None
        for k, v in node.value:
            if k.value == p:
                line, node = k.start_mark.line + 1, v
                break
        else:
            return None
    return line
