import json

import numpy as np
import pandas as pd
import pytest

import modelyard
from tests.conftest import run_cli, tiny_config


def tfidf_config(csv, **model):
    cfg = tiny_config(name="tfidf", data={"source": f"csv:{csv}", "text": "description", "target": "topic"})
    cfg["model"] = {"name": "tfidf-linear", **model}
    return cfg


@pytest.fixture(scope="module")
def tfidf_run(tmp_path_factory, topics_csv):
    return modelyard.train(tfidf_config(topics_csv), output=tmp_path_factory.mktemp("runs"), quiet=True)


def test_fits_and_writes_the_same_run_directory(tfidf_run):
    m = tfidf_run.metrics
    assert m["test"]["accuracy"] > 0.6 and m["temperature"] > 0
    files = {p.name for p in (tfidf_run.path / "model").iterdir()}
    assert files == {"model.safetensors", "tfidf_vocabulary.json", "modelyard.json"}  # no pickle anywhere
    frame = pd.read_csv(tfidf_run.path / "predictions" / "test.csv")
    assert np.allclose(frame.filter(like="prob_").sum(axis=1), 1.0)
    assert "Fitted in" in tfidf_run.report_path.read_text()


def test_reloaded_model_gives_identical_probabilities(tfidf_run):
    frame = pd.read_csv(tfidf_run.path / "predictions" / "test.csv")
    model = modelyard.load(tfidf_run.path)
    assert model.predict(["fresh basil and tomato seeds"]).shape == (1,)
    report = modelyard.evaluate(tfidf_run.path)
    assert report["accuracy"] == pytest.approx(tfidf_run.metrics["test"]["accuracy"])
    assert report["n"] == len(frame)


def test_predict_reads_a_text_file_one_example_per_line(tfidf_run, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("router switch cable\n\nseeds soil compost\n")
    proc = run_cli("predict", tfidf_run.path, path)
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(__import__("io").StringIO(proc.stdout))
    assert list(rows["id"]) == [1, 3] and set(rows["predicted"]) <= set(modelyard.load(tfidf_run.path).labels)


@pytest.mark.parametrize("classifier", ["svm", "logreg"])
def test_two_classes_and_both_classifiers(tmp_path, topics_csv, classifier):
    frame = pd.read_csv(topics_csv)
    two = frame[frame["topic"].isin(sorted(frame["topic"].unique())[:2])]
    path = tmp_path / "two.csv"
    two.to_csv(path, index=False)
    run = modelyard.train(tfidf_config(path, classifier=classifier), output=tmp_path, quiet=True)
    prob = modelyard.load(run.path).predict_proba(two["description"].tolist())
    assert prob.shape == (len(two), 2) and np.allclose(prob.sum(axis=1), 1.0)


def test_tfidf_refuses_images_and_weights(tmp_path):
    from modelyard.errors import ConfigError, ModelError

    with pytest.raises(ModelError, match="cannot read image data"):
        modelyard.train(tiny_config(model={"name": "tfidf-linear"}) | {"model": {"name": "tfidf-linear"}},
                        output=tmp_path, quiet=True)
    with pytest.raises(ConfigError, match="fitted from scratch"):
        modelyard.train(tiny_config() | {"model": {"name": "tfidf-linear", "pretrained": "x.safetensors"}},
                        output=tmp_path, quiet=True)


def test_metrics_record_what_was_fitted(tfidf_run):
    m = json.loads((tfidf_run.path / "metrics.json").read_text())
    assert m["parameters"] == m["trainable_parameters"] > 0 and m["monitor"] is None


@pytest.mark.parametrize("classifier", ["svm", "logreg"])
def test_answers_equal_scikit_learns_own_pipeline(tmp_path, topics_csv, classifier):
    """The saved, reloaded model scores texts exactly as the scikit-learn pipeline it stands for."""
    from scipy.special import softmax
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    from modelyard.config import load_config
    from modelyard.data import read_splits

    cfg = load_config(tfidf_config(topics_csv, classifier=classifier, C=0.7))
    run = modelyard.train(cfg, output=tmp_path, quiet=True)
    raw, parts, labels = read_splits(cfg.data, cfg.seed)
    texts = {name: [raw.x[i] for i in idx] for name, idx in parts.items()}
    y = {name: np.searchsorted(labels, raw.y[idx]) for name, idx in parts.items()}
    m = cfg.model
    reference = make_pipeline(
        TfidfVectorizer(ngram_range=(1, m.ngram_max), min_df=m.min_df, max_features=m.max_features,
                        sublinear_tf=m.sublinear_tf, lowercase=m.lowercase),
        LinearSVC(C=0.7) if classifier == "svm" else LogisticRegression(C=0.7, max_iter=2000),
    ).fit(texts["train"], y["train"])
    scores = reference.decision_function(texts["test"])
    expected = softmax(scores / json.loads((run.path / "metrics.json").read_text())["temperature"], axis=1)
    model = modelyard.load(run.path)
    assert list(model.labels) == list(labels)
    # float32 coefficients and TF-IDF weights (half the size on disk) against float64: agreement to 1e-3
    np.testing.assert_allclose(model.predict_proba(texts["test"]), expected, atol=1e-3)
    assert list(model.predict(texts["test"])) == [labels[i] for i in reference.predict(texts["test"])]
