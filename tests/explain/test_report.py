"""The report's section "What the model looks at": present in every classifier's report, drawn from a fixed
sample of right and wrong test predictions, and one sentence instead whenever it cannot be drawn."""

import html
import json
import re
import shutil

import numpy as np
import pytest

import modelyard
from modelyard.report.explain import HEADING, explain_section, sample
from modelyard.report.html import render_run
from modelyard.report.render import layout_problems
from modelyard.runs import RunDir
from tests.conftest import tiny_config
from tests.test_generation import tiny_lm  # noqa: F401  (a fixture: the cheapest language model there is)


def section(page: str) -> str:
    start = page.index(HEADING)
    return page[start:page.index("<h2>", start + len(HEADING))]


@pytest.fixture
def copied_run(digits_run, tmp_path):
    """A copy of the session's tiny digits run, to damage or re-render without touching the shared one."""
    return shutil.copytree(digits_run.path, tmp_path / digits_run.path.name)


def test_an_image_run_shows_right_and_wrong_test_examples_as_pictures(copied_run, monkeypatch):
    import modelyard.report.explain as shipped

    monkeypatch.setattr(shipped, "RIGHT", 4)  # the sample a user's report has (conftest shrinks it for the suite)
    monkeypatch.setattr(shipped, "WRONG", 4)
    render_run(copied_run)
    page = (copied_run / "report.html").read_text()
    shown = section(page)
    right, wrong = (len(re.findall(rf", {kind}\): predicted", shown)) for kind in ("right", "wrong"))
    assert right == 4 and 1 <= wrong <= 4  # a two-epoch MLP gets some digits wrong
    assert shown.count("<img") == right + wrong and "src=\"data:image/png;base64," in shown
    assert "by <b>integrated-gradients</b> (n steps 32" in shown
    assert "Baseline: the training split's mean image" in html.unescape(shown)
    assert layout_problems(page) == []  # fits 1,280 px, every picture embedded: one self-contained file
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page)


def test_a_text_run_shows_highlighted_tokens(tmp_path, topics_csv):
    cfg = tiny_config(name="tfidf", data={"source": f"csv:{topics_csv}", "text": "description", "target": "topic"})
    cfg["model"] = {"name": "tfidf-linear"}
    run = modelyard.train(cfg, output=tmp_path, quiet=True)
    shown = section(run.report_path.read_text())
    assert "by <b>linear</b>" in shown and "Not shown" not in shown
    assert len(re.findall(r"<span[^>]*background", shown)) >= 8  # tokens coloured by their attribution


def test_the_sample_is_fixed_and_takes_what_there_is():
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    prob = np.eye(2)[[0, 1, 0, 1, 0, 1, 0, 1, 1, 0]]  # the last two wrong
    right, wrong = sample(y, prob, 4, 4, seed=0)
    assert len(right) == 4 and list(wrong) == [8, 9] and all(y[right] == prob[right].argmax(axis=1))
    assert [list(p) for p in sample(y, prob, 4, 4, seed=0)] == [list(right), list(wrong)]
    assert [len(p) for p in sample(y, np.eye(2)[y], 4, 4, seed=0)] == [4, 0]


def test_a_test_split_that_cannot_be_read_is_one_sentence(copied_run):
    record = json.loads((copied_run / "splits.json").read_text())
    record["data_sha256"] = "0" * 64  # as if the data changed since the run was trained
    (copied_run / "splits.json").write_text(json.dumps(record))
    render_run(copied_run)
    page = copied_run.joinpath("report.html").read_text()
    shown = section(page)
    assert re.fullmatch(rf'{re.escape(HEADING)}\s*<p class="note">Not shown: builtin:digits is not the data run '
                        rf'.* trained on .*\.</p>\s*', shown), shown
    assert "Can its confidence be trusted?" in page  # the rest of the report is there


def test_the_report_is_written_when_the_explanation_fails(copied_run, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("modelyard.explain.base.explain", boom)
    render_run(copied_run)
    shown = section(copied_run.joinpath("report.html").read_text())
    assert "Not shown: internal error: RuntimeError: boom. Rerun `modelyard report" in shown
    assert "second line" not in shown


def test_a_language_model_is_one_sentence(digits_run, tiny_lm):  # noqa: F811
    run = RunDir.open(digits_run.path)
    y, prob = np.array([0]), np.array([[1.0, 0.0]])
    shown = explain_section(run, run.config(), (y, prob, None), ["a", "b"], model=tiny_lm)
    assert shown.startswith(HEADING) and "Not shown:" in shown and "explanations are for classifiers" in shown
