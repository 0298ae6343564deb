"""Regression tests for what a hostile review of explanations found: each test names the bug a user met."""

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

import modelyard
from modelyard.errors import ConfigError, DataError
from modelyard.explain.base import EXPLAINERS, check_params, explain, why_not
from tests.conftest import cli_in_process, tiny_config

DIGITS = load_digits().images[:2]  # (2, 8, 8) in the training data's units


@pytest.fixture(scope="module")
def digits_model(digits_run):
    return modelyard.load(digits_run.path)


@pytest.fixture(scope="module")
def table_model(tmp_path_factory, wine_csv, no_report):
    cfg = tiny_config(name="wine", data={"source": f"csv:{wine_csv}", "target": "cultivar"},
                      train={"epochs": 1, "batch_size": 64})
    cfg["model"] = {"name": "logreg"}
    return modelyard.load(modelyard.train(cfg, output=tmp_path_factory.mktemp("runs"), quiet=True).path)


@pytest.fixture(scope="module")
def tfidf_run(tmp_path_factory, topics_csv, no_report):
    cfg = tiny_config(name="tfidf", data={"source": f"csv:{topics_csv}", "text": "description", "target": "topic"})
    cfg["model"] = {"name": "tfidf-linear"}
    return modelyard.train(cfg, output=tmp_path_factory.mktemp("runs"), quiet=True).path


def test_a_flag_is_not_a_step_count(digits_model):
    # pydantic read True as 1: n_steps=True ran Integrated Gradients with a single step, silently
    with pytest.raises(ConfigError, match="n_steps: expected a number, not True"):
        explain(digits_model, DIGITS, n_steps=True)
    with pytest.raises(ConfigError, match="window: expected a number, not False"):
        explain(digits_model, DIGITS, method="occlusion", window=False)
    assert explain(digits_model, DIGITS[:1], n_steps=np.int64(2)).settings["n_steps"] == 2  # numpy ints still do


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_shap_seed_numpy_cannot_take_is_refused_before_the_method_runs(seed):
    # numpy's legacy seeding raised ValueError mid-method: a traceback in Python, a 500 from the server
    impl = EXPLAINERS.get("kernel-shap").obj.impls["tabular"]
    with pytest.raises(ConfigError, match="seed"):
        check_params("kernel-shap", impl, {"seed": seed})


def test_table_rows_as_dicts_are_read_and_other_containers_refused(table_model, wine_csv):
    rows = pd.read_csv(wine_csv).drop(columns=["cultivar"]).head(2)
    # a dict per row (what the server's JSON and many callers hold) failed on `frame.attrs` with AttributeError
    by_frame = explain(table_model, rows)
    by_dicts = explain(table_model, rows.to_dict(orient="records"))
    one = explain(table_model, rows.iloc[0].to_dict())
    np.testing.assert_allclose(by_dicts[1].values, by_frame[1].values)
    np.testing.assert_allclose(one[0].values, by_frame[0].values)
    with pytest.raises(DataError, match="table rows come as a DataFrame, a dict per row or a CSV path"):
        explain(table_model, rows.to_numpy())
    with pytest.raises(DataError, match="no inputs to explain"):
        explain(table_model, [])


def test_inputs_the_preprocessor_cannot_convert_are_data_errors(digits_model):
    from PIL import Image

    # TypeError, RuntimeError (torch's interpolate) and len() of a lone PIL image used to escape as tracebacks
    with pytest.raises(DataError, match="the model cannot take these inputs .*object_"):
        explain(digits_model, np.array(["a", "b"], dtype=object))
    with pytest.raises(DataError, match="the model cannot take these inputs"):
        explain(digits_model, np.zeros((1, 0, 8)))
    with pytest.raises(DataError, match="cannot explain a generator"):
        explain(digits_model, (d for d in DIGITS))
    image = Image.fromarray(np.uint8(DIGITS[0] * 255 / 16))
    assert len(explain(digits_model, image, method="saliency")) == 1


def test_a_folder_given_to_a_text_model_is_a_data_error(tfidf_run, tmp_path, capsys):
    # IsADirectoryError: "internal error ... report it", from explain and predict alike
    for command in ("explain", "predict"):
        code, out, err = cli_in_process(capsys, command, tfidf_run, tmp_path)
        assert code == 2 and f"{tmp_path} is a folder, and a text model reads a CSV or a .txt file" in err, err


def test_same_named_files_in_two_folders_get_ids_that_tell_them_apart(digits_model, tmp_path):
    from PIL import Image

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.uint8(DIGITS[0] * 255 / 16)).save(tmp_path / folder / "x.png")
    e = explain(digits_model, [tmp_path / "a", tmp_path / "b"], method="saliency")
    assert [it.id for it in e] == [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png")]
    single = explain(digits_model, [tmp_path / "a" / "x.png"], method="saliency")
    assert single[0].id == "x.png"  # a name alone where it is unambiguous


def test_the_refusal_of_a_gradient_method_reads_as_english(digits_model):
    class Onnx:
        family, kind, model_name, module = "onnx", "image", "mlp", None

    assert why_not(EXPLAINERS.get("saliency").obj, Onnx()) == "it needs gradients, and an onnx model gives none"


def test_the_report_never_reads_a_test_text_as_a_path(tfidf_run, monkeypatch):
    from modelyard.report.explain import HEADING, explain_section
    from modelyard.runs import RunDir

    # "." (any text naming a file or folder in the working directory) was opened as one: "Not shown: . is a folder"
    monkeypatch.setattr("modelyard.report.explain._test_examples",
                        lambda run, chosen, y, labels: ([".", "README.md"][:len(chosen)], ["a", "b"][:len(chosen)]))
    run = RunDir.open(tfidf_run)
    y, prob = np.array([0, 1]), np.array([[0.9, 0.1, 0.0], [0.9, 0.1, 0.0]])  # one right, one wrong
    shown = explain_section(run, run.config(), (y, prob, None), ["garden", "kitchen", "network"])
    assert shown.startswith(HEADING) and "Not shown" not in shown and "by <b>linear</b>" in shown, shown


def test_a_two_class_tfidf_model_explains_either_class(tmp_path, topics_csv, no_report):
    # scikit-learn keeps one score for two classes, stored as (0, s): class 0's attributions were all zero, so every
    # text the model put in class 0 was shown with no word highlighted
    frame = pd.read_csv(topics_csv)
    labels = sorted(frame["topic"].unique())[:2]
    frame[frame["topic"].isin(labels)].to_csv(tmp_path / "two.csv", index=False)
    cfg = tiny_config(name="two", data={"source": f"csv:{tmp_path / 'two.csv'}", "text": "description",
                                        "target": "topic"})
    cfg["model"] = {"name": "tfidf-linear"}
    model = modelyard.load(modelyard.train(cfg, output=tmp_path, quiet=True).path)
    text = frame[frame["topic"] == labels[0]]["description"].iloc[0]
    first, second = (explain(model, text, target=label)[0] for label in labels)
    assert np.abs(first.values).max() > 0 and first.quality["completeness_gap"] < 1e-6
    np.testing.assert_allclose(first.values, -second.values)  # log-odds of one class are minus the other's


def test_kernel_shap_with_too_few_coalitions_says_so_in_a_note_not_on_stderr(table_model, wine_csv):
    import warnings

    rows = pd.read_csv(wine_csv).drop(columns=["cultivar"]).head(1)
    with warnings.catch_warnings(record=True) as caught:  # shap's six-line UserWarning landed amid the CLI's table
        warnings.simplefilter("always")
        e = explain(table_model, rows, method="kernel-shap", max_evals=2, background=1)
    assert not [w for w in caught if "singular" in str(w.message)]
    assert any("too few to tell" in note and "least-squares guess" in note for note in e.notes), e.notes
