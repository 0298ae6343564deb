"""Deletion curves and the model-randomisation sanity check (explain/faithfulness.py): on a tiny digits LeNet
trained to be right on most inputs (the figures and the issue's sanity bar), then each other way a unit is
replaced by the reference: TF-IDF words, token ids (a tiny Hugging Face BERT) and table columns."""

import copy

import numpy as np
import pytest
import torch

import modelyard
from modelyard.errors import ConfigError
from modelyard.explain import explain
from modelyard.explain.base import Subject
from modelyard.explain.faithfulness import SanityCheck, deletion_curves, faithfulness, randomised, sanity_check
from tests.conftest import tiny_config

IG = {"n_steps": 16}  # enough for a LeNet on 8x8 inputs (the bench states its own, larger, step count)


@pytest.fixture(scope="module")
def lenet(tmp_path_factory, no_report):
    cfg = tiny_config(model={"name": "lenet5", "channels": [4, 8], "hidden_sizes": [32]},
                      train={"epochs": 3, "batch_size": 64, "lr": 0.02}, evaluate={"bootstrap": 0})
    run = modelyard.train(cfg, output=tmp_path_factory.mktemp("lenet"), quiet=True)
    assert run.metrics["test"]["accuracy"] > 0.8  # what the figures below assume: a model that has learnt
    return modelyard.load(run.path)


@pytest.fixture(scope="module")
def images():
    from sklearn.datasets import load_digits

    return load_digits().images[-24:]  # (24, 8, 8)


@pytest.fixture(scope="module")
def scored(lenet, images):
    """Integrated Gradients' and saliency's explanations of the same images and their deletion curves."""
    e = explain(lenet, images, method="integrated-gradients", **IG)
    return {"integrated-gradients": (e, deletion_curves(lenet, e, images, steps=16)),
            "saliency": faithfulness(lenet, images, "saliency", steps=16)}  # explains and scores in one call


def test_integrated_gradients_deletes_the_target_faster_than_random_and_than_saliency(scored):
    ig, sal = scored["integrated-gradients"][1], scored["saliency"][1]
    assert ig.ratio < 0.6  # the issue's quick check on the full LeNet: 0.155
    assert ig.ratio < sal.ratio < 1.0
    assert ig.curves.shape == ig.random_curves.shape == (24, 17) and ig.areas.shape == (24,)
    assert (ig.n_units == 64).all()  # a pixel is one unit, whatever its channels


def test_random_orders_do_not_depend_on_the_method(scored, lenet, images):
    ig, sal = scored["integrated-gradients"][1], scored["saliency"][1]
    np.testing.assert_array_equal(ig.random_curves, sal.random_curves)
    assert not np.allclose(ig.curves, sal.curves)
    other_seed = deletion_curves(lenet, scored["saliency"][0], images, steps=16, seed=1)
    assert not np.allclose(other_seed.random_curves, sal.random_curves)
    np.testing.assert_array_equal(other_seed.curves, sal.curves)  # no ties in saliency: its order is its own
    reused = deletion_curves(lenet, scored["saliency"][0], images, steps=16, random_from=ig)
    np.testing.assert_array_equal(reused.random_curves, sal.random_curves)
    assert reused.ratio == sal.ratio
    with pytest.raises(ConfigError, match="random_from holds the curves of other"):
        deletion_curves(lenet, scored["saliency"][0], images, steps=8, random_from=ig)


def test_a_flat_map_scores_as_random_orders_do(scored, lenet, images):
    e = copy.deepcopy(scored["saliency"][0])
    for item in e:
        item.values = np.zeros_like(item.values)  # nothing to order by (Grad-CAM's ReLU often gives this)
    curves = deletion_curves(lenet, e, images, steps=16)
    assert curves.flat == len(e) and scored["saliency"][1].flat == 0
    assert 0.8 < curves.ratio < 1.2  # ties broken at random, not in the order pixels are stored


def test_curves_run_from_the_models_probability_to_the_reference_s(scored, lenet):
    e, curves = scored["integrated-gradients"]
    target = [lenet.labels.index(it.target) for it in e]
    np.testing.assert_allclose(curves.curves[:, 0], [it.probability for it in e], atol=1e-6)
    reference = Subject(lenet).reference.value.unsqueeze(0)  # (1, 1, 8, 8): every pixel replaced
    at_reference = lenet.proba_of(reference)[0, target]
    np.testing.assert_allclose(curves.curves[:, -1], at_reference, atol=1e-6)
    np.testing.assert_allclose(curves.random_curves[:, -1], at_reference, atol=1e-6)
    assert 0 < curves.area < curves.random_area and curves.fractions[[0, -1]].tolist() == [0.0, 1.0]


def test_a_randomised_model_gets_different_saliency_maps(lenet, images):
    check = sanity_check(lenet, images[:12], "saliency")
    assert check.spearman < 0.3 and check.spearman_abs < 0.3  # Adebayo et al.'s test; the issue's bar
    assert check.spearman_per_input.shape == (12,) and check.undefined == 0


def test_a_randomised_model_gets_different_integrated_gradients_signs(lenet, images):
    # Only the signed ranks change: IG multiplies by (x - baseline), which no weight moves, so the ranks of its
    # absolute values stay correlated (about 0.75 here and on the full LeNet; see spearman_abs).
    check = sanity_check(lenet, images[:12], "integrated-gradients", **IG)
    assert check.spearman < 0.3 and check.undefined == 0


def test_inputs_with_a_flat_map_are_left_out_of_the_correlation_not_counted_as_zero():
    check = SanityCheck("grad-cam", np.array([0.5, np.nan, 0.1]), np.array([0.5, np.nan, 0.3]), undefined=1)
    assert check.spearman == pytest.approx(0.3) and check.spearman_abs == pytest.approx(0.4)
    assert np.isnan(SanityCheck("grad-cam", np.array([np.nan]), np.array([np.nan]), undefined=1).spearman)


def test_randomising_resets_every_layer_and_leaves_the_model_alone(lenet):
    before = {k: v.clone() for k, v in lenet.model.state_dict().items()}
    copy = randomised(lenet, seed=0)
    for name, value in copy.model.state_dict().items():
        if value.is_floating_point() and value.numel() > 1:
            assert not torch.equal(value, before[name]), name
    for name, value in lenet.model.state_dict().items():
        assert torch.equal(value, before[name]), name
    again = randomised(lenet, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(copy.model.state_dict().values(), again.model.state_dict().values()))


def test_an_explanation_of_other_inputs_is_refused(lenet, images, scored):
    with pytest.raises(ConfigError, match="24 explanations for 3 inputs"):
        deletion_curves(lenet, scored["saliency"][0], images[:3])


# ---------------------------------------------------------------- text read as words (TF-IDF)


@pytest.fixture(scope="module")
def tfidf(tmp_path_factory, topics_csv, no_report):
    cfg = tiny_config(name="tfidf", data={"source": f"csv:{topics_csv}", "text": "description", "target": "topic"},
                      evaluate={"bootstrap": 0})
    cfg["model"] = {"name": "tfidf-linear", "classifier": "logreg", "C": 10.0}
    return modelyard.load(modelyard.train(cfg, output=tmp_path_factory.mktemp("tfidf"), quiet=True).path)


def test_tfidf_words_are_replaced_by_the_reference_word(tfidf, topics_csv):
    import pandas as pd

    texts = pd.read_csv(topics_csv)["description"].tolist()[:16]
    e = explain(tfidf, texts, method="linear")
    curves = deletion_curves(tfidf, e, texts, steps=10)
    np.testing.assert_allclose(curves.curves[:, 0], [it.probability for it in e], atol=1e-9)
    assert (curves.n_units == [len(it.units) for it in e]).all()
    # every word replaced: no feature left, so every input ends at the probability of an empty text
    empty = tfidf.predict_proba(["[UNK]"])[0, [tfidf.labels.index(it.target) for it in e]]
    np.testing.assert_allclose(curves.curves[:, -1], empty, atol=1e-9)
    assert curves.ratio < 1.0


def test_a_text_without_a_word_the_model_reads_has_a_flat_curve(tfidf):
    e = explain(tfidf, ["a ?"], method="linear")  # one-letter tokens: the analyzer keeps no word
    curves = deletion_curves(tfidf, e, ["a ?"], steps=4)
    assert curves.n_units.tolist() == [0]
    np.testing.assert_allclose(curves.curves[0], e[0].probability)


def test_the_sanity_check_needs_a_torch_model(tfidf):
    with pytest.raises(ConfigError, match="re-initialises a torch model"):
        sanity_check(tfidf, ["a text"], "linear")


# ---------------------------------------------------------------- text read as token ids (Hugging Face)


@pytest.fixture(scope="module")
def bert(tmp_path_factory, topics_csv, tiny_bert_dir, no_report):
    cfg = tiny_config(name="hf", data={"source": f"csv:{topics_csv}", "text": "description", "target": "topic",
                                       "tokenizer": {"max_length": 24}},
                      train={"epochs": 1, "batch_size": 8, "lr": 0.001}, evaluate={"bootstrap": 0})
    cfg["model"] = {"name": "hf", "pretrained": str(tiny_bert_dir)}
    return modelyard.load(modelyard.train(cfg, output=tmp_path_factory.mktemp("bert"), quiet=True).path)


def test_tokens_are_replaced_by_the_mask_token_where_the_explanation_says(bert, topics_csv):
    import pandas as pd

    from modelyard.explain.text import baseline_ids

    texts = pd.read_csv(topics_csv)["description"].tolist()[:6]
    e = explain(bert, texts, method="occlusion")
    curves = deletion_curves(bert, e, texts, steps=8)
    np.testing.assert_allclose(curves.curves[:, 0], [it.probability for it in e], atol=1e-6)
    assert curves.n_units.tolist() == [len(it.positions) for it in e]
    masked = baseline_ids(Subject(bert), bert.transform(texts))  # every token of the text masked: the last point
    target = [bert.labels.index(it.target) for it in e]
    np.testing.assert_allclose(curves.curves[:, -1], bert.proba_of(masked)[np.arange(6), target], atol=1e-6)


def test_randomising_a_hugging_face_model_changes_every_tensor(bert):
    copy = randomised(bert, seed=0)
    changed = [not torch.equal(a, b) for a, b in zip(copy.model.state_dict().values(),
                                                     bert.model.state_dict().values())]
    assert all(changed) and copy.family == "hf"
    assert not np.allclose(copy.predict_proba(["router packet server"]), bert.predict_proba(["router packet server"]))


# ---------------------------------------------------------------- table rows


@pytest.fixture(scope="module")
def wine_logreg(tmp_path_factory, wine_csv, no_report):
    cfg = tiny_config(name="wine", data={"source": f"csv:{wine_csv}", "target": "cultivar",
                                         "categorical": ["colour_band"]},
                      train={"epochs": 3, "batch_size": 32, "lr": 0.05}, evaluate={"bootstrap": 0})
    cfg["model"] = {"name": "logreg"}
    return modelyard.load(modelyard.train(cfg, output=tmp_path_factory.mktemp("wine"), quiet=True).path)


def test_columns_take_the_reference_rows_raw_values(wine_logreg, wine_csv):
    import pandas as pd

    rows = pd.read_csv(wine_csv).drop(columns="cultivar").iloc[::20].reset_index(drop=True)  # 9 rows
    e = explain(wine_logreg, rows, method="linear")
    curves = deletion_curves(wine_logreg, e, rows, steps=7)
    assert (curves.n_units == 14).all()  # 13 numeric columns and one categorical (its one-hot slots together)
    np.testing.assert_allclose(curves.curves[:, 0], [it.probability for it in e], atol=1e-6)
    reference = Subject(wine_logreg).reference.value  # the mean row: every column replaced
    target = [wine_logreg.labels.index(it.target) for it in e]
    np.testing.assert_allclose(curves.curves[:, -1], wine_logreg.predict_proba(reference)[0, target], atol=1e-6)
    assert curves.ratio < 1.0
