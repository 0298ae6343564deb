"""`evaluate(RUN, data=...)` scores a trained run on a new file, read with the run's own columns and labels."""

import numpy as np
import pandas as pd
import pytest

import modelyard
from modelyard.errors import DataError
from modelyard.evaluation import evaluate
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory, wine_csv):
    cfg = tiny_config(name="wine", data={"source": f"csv:{wine_csv}", "target": "cultivar"},
                      model={"name": "mlp", "hidden_sizes": [16]}, train={"epochs": 3, "batch_size": 16})
    return modelyard.train(cfg, output=tmp_path_factory.mktemp("runs"), quiet=True)


def _expected(run_path, frame: pd.DataFrame, target: str) -> tuple[float, list[str]]:
    model = modelyard.load(run_path)
    predicted = model.predict(frame)
    return float(np.mean(predicted == frame[target].astype(str).to_numpy())), model.labels


def test_a_new_table_is_read_with_the_runs_columns(tmp_path, wine_run, wine_csv):
    frame = pd.read_csv(wine_csv)
    new = frame.iloc[::3].copy()  # a subset, columns shuffled, an extra column the model never saw
    new.insert(0, "row_id", np.arange(len(new)))
    new = new[list(reversed(new.columns))]
    new.to_csv(tmp_path / "new.csv", index=False)
    report = evaluate(wine_run.path, data=f"csv:{tmp_path / 'new.csv'}")
    accuracy, labels = _expected(wine_run.path, new.drop(columns=["row_id"]), "cultivar")
    assert report["n"] == len(new) and report["split"] == "all"
    assert report["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert report["labels"] == labels  # the model's own label order
    assert report["headline"]["interval"] == "clopper-pearson"


def test_a_file_without_some_classes_keeps_the_label_order(tmp_path, wine_run, wine_csv):
    frame = pd.read_csv(wine_csv)
    labels = modelyard.load(wine_run.path).labels
    only = frame[frame["cultivar"].astype(str) == labels[-1]]
    only.to_csv(tmp_path / "one-class.csv", index=False)
    report = evaluate(wine_run.path, data=f"csv:{tmp_path / 'one-class.csv'}")
    assert report["labels"] == labels and len(report["confusion_matrix"]) == len(labels)
    assert report["per_class"][labels[-1]]["support"] == len(only)
    assert report["roc_auc_ovr_macro"] is None  # undefined with one class, as scikit-learn says


def test_a_label_never_seen_in_training_is_named_with_the_file(tmp_path, wine_run, wine_csv):
    frame = pd.read_csv(wine_csv).head(10)
    frame.loc[3, "cultivar"] = "pinot-noir"
    frame.to_csv(tmp_path / "odd.csv", index=False)
    with pytest.raises(DataError, match=r"odd\.csv.*'pinot-noir'.*never learnt"):
        evaluate(wine_run.path, data=f"csv:{tmp_path / 'odd.csv'}")


def test_a_missing_column_is_named_with_its_role(tmp_path, wine_run, wine_csv):
    frame = pd.read_csv(wine_csv).head(10)
    feature = [c for c in frame.columns if c != "cultivar"][0]
    frame.drop(columns=[feature]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match=rf"short\.csv lacks column\(s\) '{feature}' \(feature\)"):
        evaluate(wine_run.path, data=f"csv:{tmp_path / 'short.csv'}")
    frame.drop(columns=["cultivar"]).to_csv(tmp_path / "unlabelled.csv", index=False)
    with pytest.raises(DataError, match=r"'cultivar' \(label column \(data.target\)\)"):
        evaluate(wine_run.path, data=f"csv:{tmp_path / 'unlabelled.csv'}")


def test_a_run_trained_on_builtin_text_scores_a_csv(tmp_path):
    # The reported failure: "data.target is not set", since the run's config names no columns.
    from modelyard.data.text import BUILTIN

    cfg = tiny_config(name="debian", data={"source": "builtin:debian-sections"})
    cfg["model"] = {"name": "tfidf-linear", "ngram_max": 1, "max_features": 2000}
    run = modelyard.train(cfg, output=tmp_path / "runs", quiet=True)
    new = pd.read_csv(BUILTIN / "debian-sections" / "test.csv.gz").head(60)
    new.to_csv(tmp_path / "descriptions.csv", index=False)
    report = evaluate(run.path, data=f"csv:{tmp_path / 'descriptions.csv'}")
    accuracy, labels = _expected(run.path, new, "label")
    assert report["n"] == 60 and report["labels"] == labels
    assert report["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    new.rename(columns={"text": "description"}).to_csv(tmp_path / "renamed.csv", index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) 'text' \(text column \(data.text\)\)"):
        evaluate(run.path, data=f"csv:{tmp_path / 'renamed.csv'}")
