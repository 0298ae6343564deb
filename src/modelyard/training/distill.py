"""Knowledge distillation in the training loop: the teacher run, checked against the student's data before the
first step, and the loss of Hinton et al. (2015), "Distilling the Knowledge in a Neural Network".

The teacher is the run's saved model (`modelyard.load`), in eval mode and without gradients, on the training
device and never wrapped by Accelerate: every process runs its own copy on its own shard of the batch. It reads
the student's batch as it is, so both must read the same preprocessed inputs; `check_inputs` makes sure.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from modelyard.errors import ConfigError, ModelyardError

TEACHER_FAMILIES = ("torch", "hf")  # the families whose adapter gives logits on the training device


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, *,
                      temperature: float, alpha: float, reduction: str = "mean") -> torch.Tensor:
    """alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * cross-entropy(student, y).

    The T^2 factor keeps the soft targets' gradients at the scale of the hard targets' as T changes (Hinton et al.).

    Args:
        student_logits, teacher_logits: (B, C) class scores.
        y: (B,) class indices.
        reduction: "mean" or "sum" over the batch (the loop sums, then divides by its accumulation window).
    """
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)  # (B, C)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)  # (B, C)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="none").sum(dim=-1)  # (B,)
    hard = F.cross_entropy(student_logits.float(), y, reduction="none")  # (B,)
    per_example = alpha * t * t * kl + (1.0 - alpha) * hard
    return per_example.sum() if reduction == "sum" else per_example.mean()


@dataclass
class Teacher:
    """A loaded, checked teacher and the loss settings of `train.distill`."""

    predictor: Any  # artifact.Predictor
    temperature: float
    alpha: float
    autocast: Callable[[], Any] = contextlib.nullcontext  # the student's mixed precision, for the teacher's forward
    notes: list[str] = field(default_factory=list)  # remarks for the run summary (a student larger than its teacher)

    @classmethod
    def load(cls, cfg, bundle, student: torch.nn.Module, *, device, autocast=contextlib.nullcontext) -> "Teacher":
        """The teacher of `train.distill` (`cfg`), checked against the student's data `bundle` and model.

        Raises:
            ConfigError: the teacher run is missing or unfinished, is not a torch or hf classifier, has other labels
                than the student's data, or reads other inputs; the student is a language model.
        """
        if bundle.task != "classification":
            raise ConfigError("train.distill: the student is a language model; distillation here trains a classifier "
                              "on a classifier teacher's soft targets. Remove train.distill")
        predictor = open_teacher(cfg.teacher, device=device)
        where = f"train.distill.teacher {cfg.teacher}"
        if list(predictor.labels) != list(bundle.labels):
            raise ConfigError(f"{where}: the teacher's labels {list(predictor.labels)} differ from the student data's "
                              f"labels {list(bundle.labels)}; distil on the data the teacher was trained on (the same "
                              f"classes, in the same order)")
        check_inputs(predictor.meta, bundle, where)
        teacher = cls(predictor, cfg.temperature, cfg.alpha, autocast)
        mine = sum(p.numel() for p in student.parameters())
        theirs = predictor.adapter.count_parameters()["parameters"]
        if mine > theirs:
            teacher.notes.append(f"warning: the student has more parameters ({mine:,}) than its teacher ({theirs:,}); "
                                 "distillation usually trains a smaller model")
        return teacher

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's class scores (B, C) for the student's batch, as float32 and without a graph."""
        with torch.no_grad(), self.autocast():
            return self.predictor.adapter.logits(x).float()

    def loss_sum(self, student_logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The distillation loss summed over the batch (the loop divides by the examples per optimiser step)."""
        return distillation_loss(student_logits, self.logits(x), y, temperature=self.temperature, alpha=self.alpha,
                                 reduction="sum")


def open_teacher(path: str, *, device):
    """The teacher run's model, loaded on `device`, after checking the run completed and is a torch or hf classifier.

    Raises:
        ConfigError: naming train.distill.teacher, what is wrong and what to do.
    """
    from modelyard.artifact import load
    from modelyard.runs import RunDir

    where = f"train.distill.teacher {path}"
    try:
        run = RunDir.open(path)
    except ModelyardError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    status = run.current_status()
    if status != "completed":
        how = (f"resume it with `modelyard train --resume {run.path}`" if status in ("interrupted", "killed", "failed")
               else "wait for it to finish")
        raise ConfigError(f"{where}: the run is {status}, not completed; a teacher must be a finished run: {how}")
    try:
        # Building the teacher draws initial weights before its own are loaded: keep that off the student's RNG.
        with torch.random.fork_rng(devices=[]):
            predictor = load(run.path, device=str(device))
    except ModelyardError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if predictor.task != "classification":
        raise ConfigError(f"{where}: the teacher is a language model; a teacher must be a classifier (torch or hf) "
                          "whose class probabilities the student learns")
    if predictor.family not in TEACHER_FAMILIES:
        why = ("is a TF-IDF model, which gives no logits to soften" if predictor.family == "estimator"
               else f"runs on {predictor.family}, which the training loop does not call")
        raise ConfigError(f"{where}: the teacher's model ({predictor.meta['model']['name']}, family {predictor.family}) "
                          f"{why}; a teacher must be a {' or '.join(TEACHER_FAMILIES)} classifier (for a compressed "
                          f"model, its parent run)")
    return predictor


def check_inputs(teacher_meta: dict, bundle, where: str) -> None:
    """The teacher reads the student's batches as they are, so their preprocessing must be the same: input shape,
    normalisation statistics, tokenizer.

    Raises:
        ConfigError: naming the fields that differ and how to make them equal.
    """
    theirs, mine = teacher_meta["preprocessing"], bundle.preprocessor.to_json()
    differ = []
    if list(teacher_meta["input_shape"]) != list(bundle.input_shape):
        differ.append(f"input shape {tuple(teacher_meta['input_shape'])} vs {tuple(bundle.input_shape)}")
    differ += [f"preprocessing.{key}" for key in sorted(theirs.keys() | mine.keys())
               if not _same(theirs.get(key), mine.get(key))]
    if differ:
        raise ConfigError(f"{where}: the student's inputs are not the teacher's ({'; '.join(differ)}: teacher first): "
                          "the teacher scores the student's own batches, so both must read the same preprocessed "
                          "inputs. Use the teacher run's data section, and for text its tokenizer (an hf student: a "
                          "model.pretrained with the teacher's tokenizer; otherwise its data.tokenizer settings); "
                          "`modelyard compress TEACHER --method distill` builds such a student")


def _same(a, b) -> bool:
    """Equal, with floats (normalisation statistics) compared to 1e-6 and tokenizers compared as JSON."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-6)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, str) and isinstance(b, str) and a != b and a.startswith("{") and b.startswith("{"):
        try:
            return _same(json.loads(a), json.loads(b))
        except json.JSONDecodeError:
            return False
    return a == b
