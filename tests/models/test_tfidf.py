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
