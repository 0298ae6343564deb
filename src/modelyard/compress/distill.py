"""Knowledge distillation: a smaller student trained on the teacher's soft targets through the normal trainer.

`compress TEACHER --method distill` builds the student's config from the teacher run's own (the same data, seed
and split, so the student reads the teacher's inputs and is scored on the teacher's test split):

- an hf teacher: a Transformer with `--layers N` of its L layers, initialised from the teacher (embeddings, N of its
  layers evenly spaced with the top one kept, the pooler and the classifier), written with save_pretrained beside
  the run and fine-tuned as the student's model.pretrained;
- a torch teacher: the same family `--width` times as wide (channels, hidden_sizes, d_model), trained from scratch
  (a text-transformer also takes `--layers`).

The student trains with `train.distill` (the loss and the teacher: training/distill.py), so resume, early stopping,
checkpoints and the report work as for any run; `finish_trained` then records it as the teacher's derived run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from modelyard.compress.base import MethodParams, refuse_split_changes, register_compressor
from modelyard.errors import ConfigError

WIDTH_FIELDS = ("channels", "hidden_sizes", "d_model")  # what --width scales, in the models that have them
DEFAULT_WIDTH = 0.5


class DistillParams(MethodParams):
    layers: int | None = Field(None, ge=1, description="hf and text-transformer teachers: the student's layer count "
                               "(default: half the teacher's).")
    width: float | None = Field(None, gt=0, le=4, description="torch teachers: the student's channels and hidden sizes "
                                f"as a fraction of the teacher's (default: {DEFAULT_WIDTH}).")
    temperature: float = Field(4.0, gt=0, le=100, description="Softmax temperature of the soft targets.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the soft-target loss; the labels' weigh 1 - alpha.")
    epochs: int | None = Field(None, ge=1, description="Training epochs of the student (default: the teacher's).")
    overrides: list[str] = Field(default_factory=list, description="KEY=VALUE changes to the student's config.")


@dataclass
class StudentPlan:
    """The student's model section and what the report should say about it."""

    model: dict
    params: dict  # the options as applied (defaults resolved), recorded in the lineage
    notes: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    kept_layers: list[int] | None = None  # hf: the teacher layers the student starts from


@register_compressor("distill", params=DistillParams, applies_to=("torch", "hf"),
                     summary="a student with fewer Transformer layers, or a narrower network, trained on the "
                             "teacher's soft targets and the labels")
def distill(parent, params: DistillParams, *, output: Path, quiet: bool = True, **_):
    """Train a student of `parent` through the normal trainer and record it as a derived run; returns its RunDir.

    Raises:
        ConfigError: --layers or --width do not fit the teacher, or --set would change its data or seed.
        DataError: the teacher's data changed since it was trained.
    """
    from modelyard.compress.derived import finish_trained
    from modelyard.pipeline import train
    from modelyard.runs import RunDir

    parent.data  # noqa: B018  the data must still be the teacher's (DataError otherwise), before anything is written
    plan = plan_student(parent, params)
    cfg = student_config(parent, params, plan)
    if plan.kept_layers is not None:
        folder = init_folder(Path(output), cfg.name, len(plan.kept_layers))
        write_layer_subset(parent, plan.kept_layers, folder)
        cfg.model.pretrained = str(folder)
        plan.notes.append(f"initial weights written to {folder} (the run's model.pretrained; keep it to resume)")
    run = RunDir(train(cfg, output=output, quiet=quiet).path)
    metrics = run.read_json(run.metrics_path)
    teacher_params = parent.predictor.adapter.count_parameters()["parameters"]
    if metrics["parameters"] > teacher_params:
        plan.notes.append(f"warning: the student has more parameters ({metrics['parameters']:,}) than the teacher "
                          f"({teacher_params:,})")
    finish_trained(parent, run, "distill", plan.params, notes=plan.notes, facts=plan.facts, **parent.speed)
    return run


def plan_student(parent, params: DistillParams) -> StudentPlan:
    """The student's model section from the teacher's: fewer layers (hf, text-transformer) or narrower (torch)."""
    model = dict(parent.predictor.meta["model"])  # modelyard.json's, not config.yaml's: the parent may be pruned
    loss = {"temperature": params.temperature, "alpha": params.alpha}
    if parent.family == "hf":
        if params.width is not None:
            raise ConfigError(f"compress --method distill: --width narrows torch models; {parent.run.path} is an hf "
                              "Transformer, whose student keeps its width and drops layers: pass --layers N")
        total = parent.adapter.module.hf.config.num_hidden_layers
        layers = check_layers(params.layers if params.layers is not None else max(1, total // 2), total, parent)
        kept = spaced_layers(total, layers)
        model.update(finetune="full")  # a LoRA teacher was saved with its adapters merged in
        return StudentPlan(
            model, {**params.model_dump(mode="json"), "layers": layers},
            notes=[f"student: {layers} of the teacher's {total} Transformer layers, initialised from its layers "
                   f"{kept} (counted from 0), embeddings, pooler and classifier"],
            facts={"distill": {**loss, "teacher_layers": total, "kept_layers": kept}}, kept_layers=kept)
    width = params.width if params.width is not None else (1.0 if params.layers is not None else DEFAULT_WIDTH)
    student, changed = narrower(model, width)
    if params.layers is not None:
        if "n_layers" not in model:
            raise ConfigError(f"compress --method distill: --layers is for Transformer teachers (hf, "
                              f"text-transformer); {parent.run.path} is a {model['name']}: pass --width F to narrow it")
        student["n_layers"] = check_layers(params.layers, model["n_layers"], parent)
        changed["n_layers"] = (model["n_layers"], student["n_layers"])
    if width != 1 and not any(k in changed for k in WIDTH_FIELDS):
        raise ConfigError(f"compress --method distill --width: model {model['name']} has no "
                          f"{', '.join(WIDTH_FIELDS)} to scale; a narrower student needs a teacher such as mlp, "
                          "lenet5, cifar-cnn, mnist1d-cnn or text-transformer")
    student.update(pretrained=None, freeze_backbone=False)  # the teacher's weights do not fit a narrower model
    shown = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
    return StudentPlan(
        student, {**params.model_dump(mode="json"), "width": width},
        notes=[f"student: {model['name']} at {width:g}x the teacher's width ({shown}), trained from scratch"],
        facts={"distill": {**loss, "student_model": {k: student[k] for k in changed}}})


def check_layers(layers: int, total: int, parent) -> int:
    if total < 2:
        raise ConfigError(f"compress --method distill: the teacher {parent.run.path} has one layer, so no student "
                          "can have fewer" + ("" if parent.family == "hf" else "; pass --width F for a narrower one"))
    if not 1 <= layers < total:
        raise ConfigError(f"compress --method distill: --layers {layers} must be from 1 to {total - 1}: the teacher "
                          f"{parent.run.path} has {total} layers and the student must have fewer")
    return layers


def spaced_layers(total: int, layers: int) -> list[int]:
    """`layers` of `total` layer indices, evenly spaced and ending with the top one (its output is what the
    pooler and classifier were trained on): 3 of 6 -> [1, 3, 5]."""
    return [(i + 1) * total // layers - 1 for i in range(layers)]


def narrower(model: dict, width: float) -> tuple[dict, dict]:
    """The model section with its widths times `width`, and {field: (teacher, student)} for those that changed."""
    student, changed = dict(model), {}
    for key in ("channels", "hidden_sizes"):
        if model.get(key):
            student[key] = [max(1, round(v * width)) for v in model[key]]
    if model.get("d_model"):
        heads = model["n_heads"]  # d_model must stay a multiple of the head count
        student["d_model"] = max(heads, round(model["d_model"] * width / heads) * heads)
    for key in WIDTH_FIELDS:
        if key in model and student[key] != model[key]:
            changed[key] = (model[key], student[key])
    return student, changed


def student_config(parent, params: DistillParams, plan: StudentPlan):
    """The student's validated experiment config: the teacher's, with the student model, train.distill pointing at
    the teacher, --epochs and --set applied.

    Raises:
        ConfigError: --set names data.* or seed (the split would change) or train.distill, or is invalid.
    """
    from modelyard.config import NAME_MAX, load_config

    refuse_split_changes("distill", params.overrides)
    for item in params.overrides:
        key = item.partition("=")[0].strip()
        if key == "train.distill" or key.startswith("train.distill."):
            raise ConfigError(f"compress --method distill --set {item}: the teacher is {parent.run.path}; set the loss "
                              "with --temperature and --alpha")
    raw = parent.cfg.model_dump(mode="json")
    suffix = "-distill"
    raw["name"] = raw["name"][:NAME_MAX - len(suffix)] + suffix
    raw["model"] = plan.model
    raw["train"]["epochs"] = params.epochs or raw["train"]["epochs"]
    raw["train"]["distill"] = {"teacher": str(parent.run.path.resolve()), "temperature": params.temperature,
                               "alpha": params.alpha}
    if plan.kept_layers is not None:  # validated against the teacher's folder; the student's is written after
        raw["model"]["pretrained"] = str(parent.predictor.model_dir / "hf")
    return load_config(raw, params.overrides)


def init_folder(output: Path, name: str, layers: int) -> Path:
    """A new folder beside the runs for the hf student's initial weights."""
    from modelyard.runs import utc_stamp

    base = output / f"{name}-L{layers}-init-{utc_stamp()}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def write_layer_subset(parent, kept: list[int], folder: Path) -> Path:
    """Write with save_pretrained an hf classifier made of the teacher's layers `kept` (renumbered from 0), its
    embeddings, pooler and classifier, and its tokenizer.

    Raises:
        ModelError: the teacher's architecture has no layer stack this can find, or the weights do not map.
    """
    import copy

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from modelyard.errors import ModelError

    teacher = parent.adapter.module.hf
    total = teacher.config.num_hidden_layers
    stacks = [name for name, m in teacher.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == total]
    if len(stacks) != 1:
        raise ModelError(f"cannot find the Transformer layer stack of {type(teacher).__name__} (a list of {total} "
                         f"layers; found {stacks or 'none'}), so its layers cannot be copied into a student")
    prefix = stacks[0] + "."
    state = {}
    for key, tensor in teacher.state_dict().items():
        if key.startswith(prefix):
            index, _, rest = key[len(prefix):].partition(".")
            if int(index) not in kept:
                continue
            key = f"{prefix}{kept.index(int(index))}.{rest}"
        state[key] = tensor
    conf = copy.deepcopy(teacher.config)
    conf.num_hidden_layers = len(kept)
    student = AutoModelForSequenceClassification.from_config(conf)
    missing, unexpected = student.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"the teacher's weights do not map onto a {len(kept)}-layer {type(student).__name__}: missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}")
    student.save_pretrained(folder)
    AutoTokenizer.from_pretrained(parent.predictor.model_dir / "hf", local_files_only=True).save_pretrained(folder)
    return folder
