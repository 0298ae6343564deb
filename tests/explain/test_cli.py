"""`modelyard explain` end to end, in-process through the CLI's entry point (exit status, stdout and stderr as a
user sees them), on tiny runs trained once per module; one case runs under a pseudo-terminal."""

import json
import re

import numpy as np
import pandas as pd
import pytest

import modelyard
from tests.conftest import cli_in_process, tiny_config
from tests.test_generation import tiny_lm  # noqa: F401  (the cheapest language model there is: a fixture)
from tests.test_tty import ANSI, run_in_terminal

STEPS = ("--steps", "4")  # Integrated Gradients at 4 steps: the CLI is tested here, not the method's accuracy


def train_without_report(cfg: dict, output):
    """A tiny run without its report (seconds of plots these tests do not read). Patched for the training call
    only, not the module (`no_report`): the session's `digits_run`, first trained here, keeps its report."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("modelyard.report.html.write_report", lambda *args, **kwargs: None)
        return modelyard.train(cfg, output=output, quiet=True).path


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    cfg = tiny_config(name="lenet", model={"name": "lenet5"}, train={"epochs": 1, "batch_size": 64, "lr": 0.01})
    return train_without_report(cfg, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """Two 8x8 digits written as PNG files, as a user would pass them."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("digits")
    images = load_digits().images
    for i in (0, 1):
        Image.fromarray((images[i] * 255 / 16).astype(np.uint8)).save(folder / f"digit{i}.png")
    return folder


@pytest.fixture(scope="module")
def tfidf_run(tmp_path_factory, topics_csv):
    cfg = tiny_config(name="tfidf", data={"source": f"csv:{topics_csv}", "text": "description", "target": "topic"})
    cfg["model"] = {"name": "tfidf-linear"}
    return train_without_report(cfg, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory, wine_csv):
    cfg = tiny_config(name="wine", data={"source": f"csv:{wine_csv}", "target": "cultivar"},
                      model={"name": "mlp", "hidden_sizes": [8]}, train={"epochs": 2, "batch_size": 32})
    return train_without_report(cfg, tmp_path_factory.mktemp("runs"))


def test_image_files_give_the_table_and_a_page_with_a_picture_per_input(lenet_run, digit_files, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = cli_in_process(capsys, "explain", lenet_run, digit_files, *STEPS, "--output", out_dir)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("integrated-gradients (n_steps 4") and "baseline: the training split's mean" in lines[0]
    assert lines[1].split()[:4] == ["id", "predicted", "target", "p(target)"] and "top 3 pixels" in lines[1]
    rows = {line.split()[0]: line for line in lines[2:4]}
    assert set(rows) == {"digit0.png", "digit1.png"}
    # three (row, col) pixels with signed values, then the completeness gap as a percentage
    assert all(re.search(r"(\(\d, \d\) [+-][\d.e+-]+(, )?){3}\s+\d+\.\d%$", row) for row in rows.values()), lines
    assert lines[-1] == f"page: {out_dir / 'index.html'}"
    assert {p.name for p in out_dir.iterdir()} == {"index.html", "explanations.json", "digit0.png", "digit1.png"}
    page = (out_dir / "index.html").read_text()
    assert page.count("<img") == 2 and "integrated-gradients" in page


def test_the_default_folder_is_in_the_run_and_json_is_printed_whole(lenet_run, digit_files, capsys):
    code, out, err = cli_in_process(capsys, "explain", lenet_run, digit_files / "digit1.png", "--method", "saliency",
                                    "--target", "3", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["method"] == "saliency" and [it["target"] for it in data["items"]] == ["3"]
    assert data["items"][0]["shape"] == [8, 8] and len(data["items"][0]["attributions"]) == 64
    page = re.search(r"page: (.+)", err).group(1)
    assert page.startswith(f"{lenet_run}/explanations/") and page.endswith("/index.html")
    assert json.loads(open(page.replace("index.html", "explanations.json")).read())["method"] == "saliency"


def test_methods_lists_what_applies_with_the_default_first(lenet_run, capsys):
    code, out, err = cli_in_process(capsys, "explain", lenet_run, "--methods")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "methods for lenet5 (torch model, image inputs):"
    assert lines[1].split()[:2] == ["integrated-gradients", "default"]
    listed = {line.split()[0] for line in lines[1:] if not line.strip().startswith("not ")}
    assert {"grad-cam", "saliency", "occlusion"} <= listed
    assert any(re.match(r"\s+not kernel-shap: it explains tabular inputs", line) for line in lines)
    code, out, _ = cli_in_process(capsys, "explain", lenet_run, "--methods", "--json")
    assert code == 0 and [m["name"] for m in json.loads(out) if m["default"]] == ["integrated-gradients"]


def test_text_models_take_the_texts_themselves(tfidf_run, tmp_path, capsys):
    code, out, err = cli_in_process(capsys, "explain", tfidf_run, "fresh basil and tomato seeds",
                                    "--output", tmp_path / "out")
    assert code == 0, err
    assert out.startswith("linear") and "top 3 tokens" in out and "delta" not in out.splitlines()[1]
    assert re.search(r"^1\s+\S+\s+\S+\s+[01]\.\d{3}\s+\w+ [+-]", out.splitlines()[2])


def test_a_table_explains_csv_rows_and_ranks_its_columns(wine_run, wine_csv, tmp_path, capsys):
    rows = tmp_path / "rows.csv"
    pd.read_csv(wine_csv).drop(columns=["cultivar"]).head(2).to_csv(rows, index=False)
    # Integrated Gradients, not the default KernelSHAP: importing SHAP alone costs seconds (its own tests pay it)
    code, out, err = cli_in_process(capsys, "explain", wine_run, rows, "--method", "integrated-gradients", *STEPS,
                                    "--output", tmp_path / "rows")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("integrated-gradients") and "top 3 columns" in lines[1] and lines[1].endswith("delta")
    assert [line.split()[0] for line in lines[2:4]] == ["1", "2"]
    code, out, err = cli_in_process(capsys, "explain", wine_run, "--importance", "--repeats", "2",
                                    "--output", tmp_path / "imp")
    assert code == 0, err
    saved = pd.read_csv(tmp_path / "imp" / "importance.csv")
    columns = set(pd.read_csv(wine_csv).columns) - {"cultivar"}
    assert len(saved) == len(columns) and set(saved.iloc[:, 0]) == columns
    lines = out.splitlines()
    assert lines[0].startswith("permutation importance: the drop in test accuracy") and "(2 shuffles each" in lines[0]
    assert saved.iloc[0, 0] in lines[2]  # the most important column is printed first


@pytest.mark.parametrize("args, message", [
    (("--method", "magic"), "unknown explanation method 'magic'"),
    (("--method", "grad-cam"), None),  # filled below: grad-cam on an MLP
    (("--target", "11"), "--target '11' is not one of the model's labels. Did you mean '1'?"),
    (("--window", "3"), "integrated-gradients does not take --window (it takes --steps, --internal-batch-size)"),
    (("--steps", "0"), "Invalid value for '--steps': 0 is not in the range x>=1"),
    (("--steps", "20000"), "integrated-gradients: --steps: Input should be less than or equal to 10000"),
])
def test_bad_options_exit_2_with_one_line(digits_run, digit_files, capsys, args, message):
    code, out, err = cli_in_process(capsys, "explain", digits_run.path, digit_files, *args)
    assert code == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1
    if message is None:
        assert "--method grad-cam does not apply to mlp: it needs a convolution layer" in err
        assert re.search(r"Methods that do: .*integrated-gradients", err)
    else:
        assert message in err


def test_bad_inputs_exit_2_with_one_line(digits_run, tfidf_run, lenet_run, tiny_lm, tmp_path, capsys):  # noqa: F811
    cases = [
        ((digits_run.path, tmp_path / "missing.png"), f"input {tmp_path / 'missing.png'} not found"),
        ((tfidf_run, "  "), "input 1 is an empty text"),
        ((digits_run.path,), "give an INPUT to explain"),
        ((digits_run.path, "--importance"), "--importance ranks a table's columns, and mlp reads image inputs"),
        ((digits_run.path, "x.png", "--methods"), "--methods takes no INPUT 'x.png'"),
        ((digits_run.path, "--repeats", "2"), "--repeats counts the shuffles of --importance"),
        ((tiny_lm.model_dir, "some text"), "holds a language model; explanations are for classifiers"),
        ((tmp_path / "no-run", "x.png"), "not found"),
    ]
    for args, message in cases:
        code, out, err = cli_in_process(capsys, "explain", *args)
        assert (code, out) == (2, ""), (args, err)
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (digits_run.path / "explanations").exists()  # nothing is written for a refused call


def test_explain_in_a_terminal(lenet_run, digit_files, tmp_path):
    status, drawn = run_in_terminal("explain", lenet_run, digit_files / "digit0.png", *STEPS,
                                    "--output", tmp_path / "tty", timeout=120)
    plain = ANSI.sub("", drawn)
    assert status == 0, plain
    assert "Traceback" not in plain and re.search(r"digit0\.png\s+\d\s+\d\s+0\.\d{3}\s+\(\d, \d\)", plain), plain
    assert f"page: {tmp_path / 'tty' / 'index.html'}" in plain
