"""Table explanations: one attribution per original column (a categorical column's one-hot slots are one feature),
each method checked against what it promises (SHAP's additivity, the linear model's exact decomposition computed
here from the weights, Integrated Gradients' completeness), on tiny mlp and logreg runs of a synthetic table whose
`noise` column carries nothing."""

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import modelyard
from modelyard.errors import ConfigError, DataError, RunError
from modelyard.explain import explain
from modelyard.explain.table import permutation_importance
from tests.conftest import tiny_config


def write_table(path: Path, n: int = 160, seed: int = 0) -> Path:
    """size, weight and colour decide the label; noise does not."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], size=n)
    size, weight, noise = rng.normal(10, 3, n), rng.normal(50, 10, n), rng.normal(0, 1, n)
    score = (size - 10) / 3 + (weight - 50) / 20 + np.select([colour == "red", colour == "blue"], [1.5, -1.5], 0)
    label = np.where(score > 0.6, "high", np.where(score < -0.6, "low", "mid"))
    pd.DataFrame({"size": size.round(3), "weight": weight.round(3), "noise": noise.round(3), "colour": colour,
                  "label": label}).to_csv(path, index=False)
    return path


def train(csv: Path, output: Path, model: dict):
    cfg = tiny_config(name="table", data={"source": f"csv:{csv}", "target": "label"},
                      train={"epochs": 15, "batch_size": 32, "lr": 0.03}, evaluate={"bootstrap": 10})
    cfg["model"] = model
    return modelyard.train(cfg, output=output, quiet=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: torch's intra-op threads only add synchronisation, which on a busy machine costs more than the
    work (training the mlp took 4x longer with two threads on two shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory):
    return write_table(tmp_path_factory.mktemp("table") / "table.csv")


@pytest.fixture(scope="module")
def mlp(table_csv, tmp_path_factory, no_report):
    return train(table_csv, tmp_path_factory.mktemp("runs"), {"name": "mlp", "hidden_sizes": [16]}).path


@pytest.fixture(scope="module")
def logreg(table_csv, tmp_path_factory, no_report):
    return train(table_csv, tmp_path_factory.mktemp("runs"), {"name": "logreg"}).path


@pytest.fixture(scope="module")
def rows(table_csv):
    return pd.read_csv(table_csv).drop(columns=["label"]).head(3)


COLUMNS = ["size", "weight", "noise", "colour"]  # numeric columns first, then categorical ones


def test_kernel_shap_gives_one_value_per_original_column_and_adds_up(mlp, rows):
    e = explain(mlp, rows, method="kernel-shap")
    pre = modelyard.load(mlp).preprocessor
    assert pre.columns == COLUMNS and pre.input_shape == (6,)  # colour is 3 one-hot slots, one feature
    assert [it.units for it in e] == [COLUMNS] * 3 and all(it.values.shape == (4,) for it in e)
    assert all(it.quality["additivity_gap"] < 1e-6 for it in e)
    assert e.settings["background_rows"] == 20 and e.settings["nsamples"] == 14  # 2^4 - 2: every coalition
    assert "k-means" in e.settings["baseline"] and "112 rows" in e.settings["baseline"]
    assert e[0].shown == [f"{rows['size'][0]:g}", f"{rows['weight'][0]:g}", f"{rows['noise'][0]:g}", rows["colour"][0]]
    small = explain(mlp, rows.head(1), method="kernel-shap", background=5, max_evals=8)
    assert small.settings["background_rows"] == 5 and small.settings["nsamples"] == 8
    assert any("sampled 8 of the 14" in n for n in small.notes)
    with pytest.raises(ConfigError, match="max_evals"):
        explain(mlp, rows, method="kernel-shap", max_evals=10**6)


def test_permutation_shap_adds_up(mlp, rows):
    e = explain(mlp, rows.head(2), method="permutation-shap", background=10)
    assert [it.units for it in e] == [COLUMNS] * 2
    assert all(it.quality["additivity_gap"] < 1e-6 for it in e)
    assert e.settings["background_rows"] == 10 and e.settings["max_evals"] == 2 * 4 + 512
    with pytest.raises(ConfigError, match="at least 2 x columns"):
        explain(mlp, rows.head(1), method="permutation-shap", max_evals=5)


def test_linear_on_logreg_is_exact(logreg, rows):
    e = explain(logreg, rows, method="linear")
    predictor = modelyard.load(logreg)
    pre, weight = predictor.preprocessor, predictor.model.head.weight.detach().double().numpy()  # (C, 6)
    cats = pre.categorical["colour"]["categories"]
    mode = pre.categorical["colour"]["fill"]
    for i, item in enumerate(e):
        t = predictor.labels.index(item.target)
        expected = [weight[t, j] * (rows[col][i] - st["mean"]) / st["std"]  # the reference row is the mean
                    for j, (col, st) in enumerate(pre.numeric.items())]
        expected.append(weight[t, 3 + cats.index(rows["colour"][i])] - weight[t, 3 + cats.index(mode)])
        assert np.abs(item.values - expected).max() < 1e-5 and item.quality["completeness_gap"] < 1e-5
    assert e.settings["baseline"].startswith("the training split's mean row")


def test_integrated_gradients_on_the_mlp_is_complete(mlp, rows):
    e = explain(mlp, rows, method="integrated-gradients", n_steps=64)
    predictor = modelyard.load(mlp)
    pre = predictor.preprocessor
    reference = pd.DataFrame([{**{c: s["mean"] for c, s in pre.numeric.items()},
                               **{c: s["fill"] for c, s in pre.categorical.items()}}])
    p_ref = predictor.predict_proba(reference)[0]
    for item in e:
        t = predictor.labels.index(item.target)
        change = item.probability - p_ref[t]
        assert item.values.shape == (4,)
        assert abs(item.values.sum() - change) == pytest.approx(item.quality["convergence_delta"], abs=1e-5)
        assert item.quality["relative_delta"] < 0.05
    assert e.settings["n_steps"] == 64 and not e.notes


def test_a_model_without_gradients_takes_kernel_shap_not_integrated_gradients(mlp, rows, tmp_path):
    from modelyard.compress import compress

    int8 = compress(mlp, "int8-dynamic", output=tmp_path, speed_iterations=1).path
    e = explain(int8, rows)
    # dynamic int8 scales activations per batch: a row's probability moves a little with the rows beside it
    assert e.method == "kernel-shap" and all(it.quality["additivity_gap"] < 0.05 for it in e)
    assert all(np.isfinite(it.values).all() and it.values.shape == (4,) for it in e)
    assert "k-means" in e.settings["baseline"]  # the derived run reads its parent's training split
    with pytest.raises(ConfigError, match="needs gradients.*Methods that do: .*kernel-shap"):
        explain(int8, rows, method="integrated-gradients")


def test_default_methods(mlp, logreg, rows):
    assert explain(mlp, rows.head(1)).method == "kernel-shap"
    assert explain(logreg, rows.head(1)).method == "linear"
    with pytest.raises(ConfigError, match="needs a model linear"):
        explain(mlp, rows.head(1), method="linear")


def test_permutation_importance_ranks_the_informative_columns_above_the_noise(mlp, digits_run, tmp_path):
    ranked = permutation_importance(mlp, n_repeats=3)
    assert list(ranked.columns) == ["feature", "importance_mean", "importance_std"]
    assert sorted(ranked["feature"]) == sorted(COLUMNS) and ranked["importance_mean"].is_monotonic_decreasing
    order = list(ranked["feature"])
    assert order.index("size") < order.index("noise") and order.index("colour") < order.index("noise")
    with pytest.raises(ConfigError, match="n_repeats must be"):
        permutation_importance(mlp, n_repeats=0)
    with pytest.raises(ConfigError, match="ranks table columns"):
        permutation_importance(digits_run.path)
    bare = shutil.copytree(Path(mlp) / "model", tmp_path / "bare")
    with pytest.raises(RunError, match="no run around it"):
        permutation_importance(bare)
    with pytest.raises(RunError, match="has no holdout split.*test"):
        permutation_importance(mlp, split="holdout")
    moved = shutil.copytree(mlp, tmp_path / "moved")
    config = moved / "config.yaml"
    config.write_text(config.read_text().replace("table.csv", "gone.csv"))
    with pytest.raises(DataError, match="its data cannot be read.*gone.csv"):
        permutation_importance(moved)


def test_bad_rows_and_targets(mlp, rows):
    with pytest.raises(DataError, match="missing column.*'weight'"):
        explain(mlp, rows.drop(columns=["weight"]))
    with pytest.raises(ConfigError, match="--target 'hgh' is not one of.*Did you mean 'high'"):
        explain(mlp, rows, target="hgh")
    e = explain(mlp, rows.head(1), target="low")
    assert e[0].target == "low"


def test_an_unseen_category_is_explained_and_escaped(mlp, rows):
    odd = rows.head(1).assign(colour="<b>purple</b>")
    e = explain(mlp, odd, method="kernel-shap")
    assert e[0].shown[3] == "<b>purple</b>" and e[0].quality["additivity_gap"] < 1e-6
    page = e.fragment()
    assert "&lt;b&gt;purple&lt;/b&gt;" in page and "<b>purple" not in page


def test_save_writes_a_csv_and_a_chart_per_row(logreg, rows, tmp_path):
    e = explain(logreg, rows, ids=["a", "b/c", "d e"])
    index = e.save(tmp_path / "out")
    frame = pd.read_csv(tmp_path / "out" / "attributions.csv")
    assert list(frame.columns) == ["id", "predicted", "target", "probability", *COLUMNS] and len(frame) == 3
    assert np.allclose(frame[COLUMNS].to_numpy(), np.stack([it.values for it in e]))
    charts = sorted((tmp_path / "out").glob("*.png"))
    assert [c.name for c in charts] == ["001-a.png", "002-b_c.png", "003-d_e.png"]
    for chart in charts:
        with Image.open(chart) as im:
            im.load()
            assert im.width <= 1060
    page = index.read_text()
    assert page.count("<img") == 3 and "predicted" in page and "colour" in page


def test_chart_sums_the_columns_past_the_top_fifteen():
    from modelyard.explain.base import Item
    from modelyard.explain.table import bars, chart

    values = (np.arange(20) - 4.5) * (1 + np.arange(20) / 100)  # no two of the same size
    item = Item(id="1", predicted="x", target="x", probability=0.9, values=values, units=[f"c{i}" for i in range(20)],
                positions=None, shown=[f"${i}" for i in range(20)], quality={})
    labels, heights = bars(item)
    assert len(labels) == 16 and labels[0] == "c19 = $19" and labels[-1] == "other 5 columns"
    assert heights[-1] == pytest.approx(values[np.argsort(np.abs(values))[:5]].sum())
    with Image.open(io.BytesIO(chart(item, "kernel-shap"))) as im:  # "$" drawn as text, not mathtext
        assert im.width == 800


def test_a_background_with_few_distinct_rows_is_kept_whole_and_weighted():
    from modelyard.explain.table import _shap, summarise

    rows = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    data, source = summarise(_shap(), rows, 5, ["a", "b"], "the training split (4 rows)")
    assert data.data.tolist() == [[0.0, 1.0], [2.0, 0.0]] and data.weights.tolist() == [0.75, 0.25]
    assert source == "the 2 distinct rows of the training split (4 rows), weighted by their counts"
