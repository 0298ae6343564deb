"""Membership inference: how well can an attacker tell the run's training examples from examples it never saw?

Members are `n` examples drawn from the run's training split, non-members `n` drawn from its test split (then its
validation split when the test split is too small). Each is scored by its cross-entropy loss under the run's model;
an attacker who guesses "member" for low losses wins when the model fits its training examples better than new ones.

Three attacks, each reported as the ROC-AUC of its score (0.5: no better than chance) and the true-positive rate at
1% false positives (what a confident attacker finds; chance is 0.01):

- loss threshold (Yeom et al., 2018): score = -loss.
- calibrated loss, by per-example difficulty (Watson et al., 2022): score = -(loss - mean loss under K reference
  models). An example that is hard for every model has a high loss whether or not it was trained on; subtracting
  what models that never saw it make of it leaves the part due to membership.
- calibrated logit: the same on the logit-scaled confidence log(p / (1 - p)) of the true label, the statistic of
  LiRA (Carlini et al., 2022) in its offline form with one variance for every example (which leaves the ranking
  of score = logit - mean reference logit unchanged). The loss flattens out as p nears 1, where members and
  non-members differ; the logit spreads that region out. On an MLP fitted to MNIST-1D (1,000 members against
  1,000 non-members, 2 reference models, 3 draws) it found more than both others: AUC 0.715 against the loss
  threshold's 0.688 and the calibrated loss's 0.667.

The reference models are trained with modelyard's own trainer on the run's config.yaml (its model, recipe and seed
+ 1 + k), on every example of the data except the 2n audited ones: the run's training split without the audited
members, plus its test split without the audited non-members; the run's validation split (without audited
non-members) stays their validation split, and the 2n audited examples are their test split. So no reference
model has seen any audited example, member or not (Watson et al.'s "offline" setting; LiRA's online variant, with
models trained on each example too, needs many more models), and they train on nearly as many examples as the run
did (2n fewer), which keeps their losses comparable. They are written under RUN/audit/reference/ (or --work) in a
folder named by n, seed and epochs, and reused when found complete there.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from modelyard.errors import ConfigError, RunError

DEFAULT_N = 1000
FPR = 0.01
# A probability of exactly 0 or 1 would make the loss or the logit infinite and the AUC undefined.
MIN_PROBABILITY = 1e-12


@dataclass
class AttackResult:
    id: str
    attack: str
    auc: float
    tpr_at_1pct_fpr: float
    members: int
    non_members: int


def attack_scores(member_scores, non_member_scores) -> tuple[float, float]:
    """(ROC-AUC, TPR at 1% FPR) of an attack that calls an example a member the higher its score."""
    from sklearn.metrics import roc_auc_score, roc_curve

    scores = np.concatenate([np.asarray(member_scores, float), np.asarray(non_member_scores, float)])
    truth = np.concatenate([np.ones(len(member_scores)), np.zeros(len(non_member_scores))])
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    return float(roc_auc_score(truth, scores)), tpr_at(fpr, tpr, FPR)


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, at: float) -> float:
    """The ROC curve's true-positive rate at false-positive rate `at`, on the straight line between its points.

    The curve may rise vertically (several points at one FPR): the highest TPR reached at or below `at` is the
    line's start, so an attacker who gets that far is credited with it."""
    below = fpr <= at
    x0, y0 = fpr[below][-1], tpr[below].max()
    if x0 == at or not (~below).any():
        return float(y0)
    x1, y1 = fpr[~below][0], tpr[~below][0]
    return float(y0 + (y1 - y0) * (at - x0) / (x1 - x0))


def example_statistics(model, raw) -> dict[str, np.ndarray]:
    """Each example's cross-entropy `loss` and the `logit` log(p / (1 - p)) of its true label under `model`."""
    from modelyard.data.base import label_indices

    prob = model.predict_raw(raw)
    y = label_indices(raw.y, model.labels, where="the audited examples")
    p = np.clip(prob[np.arange(len(y)), y].astype(np.float64), MIN_PROBABILITY, 1.0 - MIN_PROBABILITY)
    return {"loss": -np.log(p), "logit": np.log(p) - np.log1p(-p)}


def audit_privacy(run, *, n: int | None = None, seed: int = 0, reference_models: int = 2,
                  reference_epochs: int | None = None, work: str | Path | None = None, quiet: bool = True,
                  log=None) -> dict:
    """Run the loss-threshold and the two difficulty-calibrated membership-inference attacks on RUN; writes
    RUN/audit/privacy.json and returns what it holds.

    Args:
        run: a run directory of a classifier.
        n: members and non-members each (default: as many as both splits allow, at most 1,000).
        seed: draws the audited examples.
        reference_models: K models for the calibrated attacks; 0 runs the loss-threshold attack only.
        reference_epochs: train the reference models this many epochs instead of the run's `train.epochs`.
        work: folder for the reference models (default: RUN/audit/reference/).
        quiet: train the reference models without the trainer's progress output.
        log: called with a line before each reference model is trained (they can take as long as RUN did).

    Raises:
        ConfigError: a language model, or `n` larger than the splits allow.
        RunError: no test split, or a derived run asked for reference models.

    Example:
        >>> audit_privacy("runs/digits-mlp-20261129T120000Z", n=200)["attacks"][0]["auc"]
    """
    from modelyard.artifact import load
    from modelyard.data import read_run_splits, source_entry
    from modelyard.runs import RunDir

    rundir = RunDir.open(run)
    cfg = rundir.config()
    if "corpus" in source_entry(cfg.data.source)[0].meta.get("kinds", ()):
        raise ConfigError(f"{rundir.path} holds a language model; the membership audit is for classifiers (it "
                          "scores each example's label)")
    if reference_models and rundir.lineage() is not None:
        raise RunError(f"{rundir.path} is a derived run ({rundir.lineage()['method']} of "
                       f"{rundir.lineage()['parent_name']}): its config.yaml is its parent's recipe, so reference "
                       "models trained from it would not be like this model. Pass --reference-models 0 for the "
                       "loss-threshold attack only, or audit the parent run")
    raw, parts, _ = read_run_splits(rundir)
    if len(parts.get("test", ())) == 0:
        raise RunError(f"{rundir.path} has no test split, so it has no examples it never saw to audit against; "
                       "train the experiment with one (data.split.test)")
    members, non_members = draw_audited(parts, n, seed, keep_val=reference_models > 0, where=rundir.path)
    model = load(rundir.path)
    target = {side: example_statistics(model, raw.take(idx)) for side, idx in sides(members, non_members)}
    results = [_result("loss", "loss threshold", *(-target[side]["loss"] for side in ("members", "non_members")))]
    references = []
    if reference_models:
        folder = Path(work) if work else rundir.path / "audit" / "reference"
        epochs = reference_epochs or cfg.train.epochs
        folder = folder / f"n{len(members)}-seed{seed}-epochs{epochs}"
        references = [train_reference(cfg, raw, parts, members, non_members, k, epochs, folder, quiet=quiet,
                                      log=log or (lambda line: None), of=reference_models)
                      for k in range(reference_models)]
        results += calibrated_attacks(target, [load(path) for path in references], raw, members, non_members)
    losses = {side: stats["loss"] for side, stats in target.items()}
    report = {"run": str(rundir.path), "seed": seed, "members": len(members), "non_members": len(non_members),
              "attacks": [asdict(r) for r in results],
              "mean_loss": {side: float(v.mean()) for side, v in losses.items()},
              "reference_models": [str(p) for p in references]}
    (rundir.path / "audit").mkdir(exist_ok=True)
    rundir.write_json(rundir.path / "audit" / "privacy.json", report)
    return report


def sides(members, non_members):
    return (("members", members), ("non_members", non_members))


def calibrated_attacks(target: dict, references: list, raw, members, non_members) -> list[AttackResult]:
    """Both statistics less their mean under the reference models, which never saw the audited examples."""
    reference = {side: [example_statistics(ref, raw.take(idx)) for ref in references]
                 for side, idx in sides(members, non_members)}
    k = f"{len(references)} reference model{'s' * (len(references) > 1)}"
    results = []
    for stat, sign in (("loss", -1.0), ("logit", 1.0)):
        scores = [sign * (target[side][stat] - np.mean([r[stat] for r in reference[side]], axis=0))
                  for side in ("members", "non_members")]
        results.append(_result(f"calibrated-{stat}", f"calibrated {stat} ({k})", *scores))
    return results


def _result(attack_id: str, name: str, member_scores, non_member_scores) -> AttackResult:
    auc, tpr = attack_scores(member_scores, non_member_scores)
    return AttackResult(attack_id, name, auc, tpr, len(member_scores), len(non_member_scores))


def draw_audited(parts: dict, n: int | None, seed: int, *, keep_val: bool, where) -> tuple[np.ndarray, np.ndarray]:
    """`n` training indices and `n` held-out ones (test first, then validation), drawn with `seed`.

    keep_val: leave at least one validation example unaudited, for the reference models' validation split."""
    train, test, val = (np.asarray(parts.get(s, ()), dtype=np.int64) for s in ("train", "test", "val"))
    held_out = len(test) + max(len(val) - int(keep_val), 0)
    most = min(len(train), held_out)
    if n is None:
        n = min(DEFAULT_N, most)
    if n < 1 or n > most:
        raise ConfigError(f"--n {n}: {where} has {len(train)} training and {held_out} held-out examples "
                          f"(test{' and validation, one kept for the reference models' if len(val) else ''}) "
                          f"to audit; pass --n between 1 and {most}")
    rng = np.random.default_rng(seed)
    members = np.sort(rng.choice(train, n, replace=False))
    if n <= len(test):
        non_members = rng.choice(test, n, replace=False)
    else:
        non_members = np.concatenate([test, rng.choice(val, n - len(test), replace=False)])
    return members, np.sort(non_members)


def reference_parts(parts: dict, members: np.ndarray, non_members: np.ndarray) -> dict[str, np.ndarray]:
    """The reference models' split: every example but the audited ones to learn from, the audited ones to test."""
    audited = np.concatenate([members, non_members])
    train = np.concatenate([np.setdiff1d(parts["train"], members), np.setdiff1d(parts["test"], non_members)])
    return {"train": np.sort(train), "val": np.setdiff1d(parts["val"], non_members), "test": np.sort(audited)}


def train_reference(cfg, raw, parts, members, non_members, k: int, epochs: int, folder: Path, *,
                    quiet: bool, log, of: int) -> Path:
    """Reference model k's run directory: reused when a completed one is in folder/ref-k, else trained there."""
    from modelyard.runs import RunDir

    out = folder / f"ref-{k}"
    done = [p for p in sorted(out.glob("*")) if (p / "config.yaml").is_file()
            and RunDir(p).current_status() == "completed" and (p / "model").is_dir()]
    if done:
        return done[-1]
    import modelyard

    ref_cfg = cfg.model_copy(deep=True)
    ref_cfg.seed = cfg.seed + 1 + k
    ref_cfg.train.epochs = epochs
    log(f"training reference model {k + 1} of {of} ({epochs} epochs) into {out}")
    with _split_as(reference_parts(parts, members, non_members)):
        return Path(modelyard.train(ref_cfg, output=out, quiet=quiet).path)


@contextlib.contextmanager
def _split_as(split: dict[str, np.ndarray]):
    """Make the trainer read `split` instead of the one config and seed draw. The trainer reads its split in one
    place (`modelyard.data.read_splits`) and records it in splits.json, so the reference run says exactly what it
    was trained on, and every later step (evaluate, report) reads that record."""
    import modelyard.data as data

    drawn = data.read_splits

    def read_reference_splits(data_cfg, seed):
        from modelyard.data.base import sort_labels

        raw = data.read_source(data_cfg.source, data_cfg)
        return raw, split, sort_labels(raw.y[split["train"]])

    data.read_splits = read_reference_splits
    try:
        yield
    finally:
        data.read_splits = drawn


def format_table(report: dict) -> str:
    rows = [("attack", "AUC", "TPR@1%FPR", "members", "non-members")]
    rows += [(a["attack"], f"{a['auc']:.3f}", f"{a['tpr_at_1pct_fpr']:.3f}", str(a["members"]), str(a["non_members"]))
             for a in report["attacks"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)
