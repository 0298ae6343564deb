"""The report's section "What the model looks at": a fixed sample of test examples, predicted right and wrong,
explained by the model's default method at cheap settings and shown as the method's view draws them.

The section runs at the end of every training run, tiny test runs included, so it must stay cheap and must
never fail the report: whatever stops it (no test split, data that cannot be read, a model no method explains,
a bug) becomes one sentence in its place.
"""

from __future__ import annotations

import html
import logging
import os
import time
import traceback

import numpy as np

from modelyard.errors import ModelyardError

log = logging.getLogger("modelyard.report")

HEADING = "<h2>What the model looks at (test)</h2>"
RIGHT, WRONG = 4, 4  # examples predicted right and wrong; fewer when the test split has fewer
# A Transformer reading text costs seconds per example under Integrated Gradients on a CPU (n_steps forward and
# backward passes of the whole encoder): the report of a fine-tuned MiniLM would take minutes with 8.
TEXT_TRANSFORMER_RIGHT, TEXT_TRANSFORMER_WRONG = 2, 2
# The settings a method is run at here, where its params class takes them: about a third of the steps Integrated
# Gradients defaults to (its completeness gap is shown, so a sample that needed more says so), and small caps on
# the model-agnostic methods' evaluations (KernelSHAP's cost is rows x max_evals x background forward rows).
# Batch sizes stay the method's own: they bound memory, not cost.
CHEAP = {"n_steps": 32, "max_evals": 256, "background": 5, "max_tokens": 128}


def explain_section(run, cfg, test_predictions, labels: list[str], *, model=None) -> str:
    """The section's HTML: the explanations, or one sentence saying why there are none.

    Args:
        run: the `runs.RunDir` the report is written for.
        test_predictions: (y, prob, names) of the test split, in the split's order.
        model: the loaded `Predictor` when the caller has it (a derived run's model before it is moved into
            place); default: loaded from the run.
    """
    try:
        return HEADING + _explained(run, cfg, test_predictions, labels, model)
    except ModelyardError as exc:
        return HEADING + _not_shown(str(exc))
    except Exception as exc:  # a bug must not fail a run whose training has finished
        # No traceback on the console at the end of a training run (the CLI shows one only when debugging):
        # the section names the error, and MODELYARD_DEBUG=1 prints the rest.
        log.debug("the report's explanations failed on %s", run.path, exc_info=True)
        if os.environ.get("MODELYARD_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        return HEADING + _not_shown(f"internal error: {type(exc).__name__}: {first}. Rerun `modelyard report "
                                    f"{run.path}` with MODELYARD_DEBUG=1 for the traceback, and report it")


def _not_shown(reason: str) -> str:
    reason = reason.rstrip(".")
    return f'<p class="note">Not shown: {html.escape(reason)}.</p>'


def _explained(run, cfg, test_predictions, labels, model) -> str:
    from modelyard.explain.base import Subject, check_method, explain

    t0 = time.perf_counter()
    y, prob, _ = test_predictions
    y, prob = np.asarray(y), np.asarray(prob)
    if len(y) == 0:
        return _not_shown("the test split is empty")
    if model is None:
        from modelyard.artifact import load

        model = load(run.path)
    subject = Subject(model)
    method, impl = check_method(subject, None)  # a language model, or no method for the family: ConfigError
    right_n, wrong_n = ((TEXT_TRANSFORMER_RIGHT, TEXT_TRANSFORMER_WRONG)
                        if subject.kind == "text" and subject.module is not None else (RIGHT, WRONG))
    right, wrong = sample(y, prob, right_n, wrong_n, seed=cfg.seed)
    chosen = np.concatenate([right, wrong])
    raw, names = _test_examples(run, chosen, y, labels)
    ids = [f"{names[k]} (true {labels[y[i]]}, {'right' if k < len(right) else 'wrong'})"
           for k, i in enumerate(chosen)]
    params = {key: value for key, value in CHEAP.items() if key in impl.params.model_fields}
    if subject.kind == "text":  # a list of strings would be read as paths where one names a file ("README.md")
        import pandas as pd

        raw = pd.DataFrame({"text": [str(t) for t in raw]})
    explanation = explain(model, raw, method=method, ids=ids, **params)
    fragment = explanation.fragment()
    log.info("explained %d test examples for the report in %.2f s", len(chosen), time.perf_counter() - t0)
    return _sentence(explanation, len(right), len(wrong), cfg.seed) + fragment


def sample(y: np.ndarray, prob: np.ndarray, right: int, wrong: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions in the test split of up to `right` examples predicted right and `wrong` predicted wrong, drawn
    with `seed` (the same run always shows the same examples), each group in the split's order."""
    rng = np.random.default_rng(seed)
    hit = prob.argmax(axis=1) == y

    def draw(pool: np.ndarray, k: int) -> np.ndarray:
        return np.sort(rng.choice(pool, min(k, len(pool)), replace=False)) if len(pool) else pool

    return draw(np.flatnonzero(hit), right), draw(np.flatnonzero(~hit), wrong)


def _test_examples(run, chosen: np.ndarray, y: np.ndarray, labels: list[str]):
    """The chosen test examples as the source read them, and their names; checked against the predictions, so
    a split that names other examples than the ones scored is said, not explained."""
    from modelyard.data import read_run_splits
    from modelyard.errors import RunError

    raw, parts, _ = read_run_splits(run)
    test = parts.get("test")
    if test is None or len(test) == 0:
        raise RunError(f"the run has no test split in {run.splits_path.name}")
    if len(test) != len(y):
        raise RunError(f"the test split holds {len(test)} examples and predictions/test.csv {len(y)}")
    picked = raw.take(test[chosen])
    if [str(v) for v in picked.y] != [labels[i] for i in y[chosen]]:
        raise RunError("the test split's labels differ from those its predictions were scored on")
    names = picked.names or [f"test {i + 1}" for i in chosen]
    return picked.x, [str(n) for n in names]


def _sentence(explanation, right: int, wrong: int, seed: int) -> str:
    """Which examples, which method and settings, what the colours mean, and the method's warnings."""
    settings = dict(explanation.settings)
    baseline = settings.pop("baseline", None)
    shown = ", ".join(f"{html.escape(str(k)).replace('_', ' ')} {html.escape(str(v))}" for k, v in settings.items())
    wrong_part = (f"{wrong} predicted wrong" if wrong
                  else "none predicted wrong (the model made no mistake on the test split)")
    text = (f"<p>{right + wrong} test examples drawn with seed {seed}: {right} predicted right and {wrong_part}, "
            f"each explained for the label the model predicted, by <b>{html.escape(explanation.method)}</b>"
            + (f" ({shown})" if shown else "") + "."
            + (f" Baseline: {html.escape(str(baseline))}." if baseline else "")
            + " Positive attributions pushed the model toward its prediction, negative ones away from it; "
            "<code>modelyard explain</code> explains any input, by any method that applies.</p>")
    warnings = "".join(f'<p class="note"><b>Warning:</b> {html.escape(n)}</p>' for n in explanation.notes)
    return text + warnings
