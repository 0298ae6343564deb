"""Text explanations: layer Integrated Gradients at the token embeddings (text-transformer, hf), the exact linear
attribution of tfidf-linear, occlusion on models without gradients, and the highlighted page."""

import html
import re

import numpy as np
import pytest
import torch

import modelyard
from modelyard.compress import compress
from modelyard.errors import ConfigError, DataError
from modelyard.explain import explain
from modelyard.explain.base import Subject
from modelyard.explain.text import baseline_ids, embedding_layer
from tests.conftest import tiny_config

SHORT = ["Ping the dns server.", "Prune my rose."]  # shorter than max_length: padding follows them
TEXTS = ["Socket for the dns firewall with a new server.", "Prune the rose and <script>alert(1)</script> compost."]


def text_config(csv, **model):
    cfg = tiny_config(name="text", data={"source": f"csv:{csv}", "text": "description", "target": "topic",
                                         "tokenizer": {"max_length": 32}},
                      train={"epochs": 1, "batch_size": 8, "lr": 0.003})
    cfg["model"] = model
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory, topics_csv, tiny_bert_dir, no_report):
    out = tmp_path_factory.mktemp("runs")
    models = {"transformer": {"name": "text-transformer", "d_model": 16, "n_heads": 2, "n_layers": 1},
              "bert": {"name": "hf", "pretrained": str(tiny_bert_dir)},
              "tfidf": {"name": "tfidf-linear"}}
    return {key: modelyard.train(text_config(topics_csv, **model), output=out, quiet=True).path
            for key, model in models.items()}


@pytest.fixture(scope="module")
def int8_run(runs, tmp_path_factory):
    return compress(runs["transformer"], "int8-dynamic", output=tmp_path_factory.mktemp("int8"),
                    speed_iterations=1).path


def real_tokens(predictor, text):
    """The text's own tokens as the tokenizer itself marks them: not special, not padding."""
    enc = predictor.preprocessor.tokenizer.encode(text)
    keep = [i for i, (s, a) in enumerate(zip(enc.special_tokens_mask, enc.attention_mask)) if not s and a]
    return [enc.tokens[i] for i in keep], keep


@pytest.mark.parametrize("case", ["transformer", "bert"])
def test_integrated_gradients_gives_one_value_per_real_token_and_is_complete(runs, case):
    predictor = modelyard.load(runs[case])
    e = explain(predictor, SHORT, method="integrated-gradients", n_steps=32, internal_batch_size=8)
    subject = Subject(predictor)
    ids = predictor.transform(SHORT)
    base = baseline_ids(subject, ids)
    pad, ref = predictor.preprocessor.pad_id, subject.reference.value
    for text, item, row, base_row in zip(SHORT, e, ids, base):
        tokens, positions = real_tokens(predictor, text)
        assert item.units == tokens and item.positions.tolist() == positions
        assert item.values.shape == (len(tokens),)
        # the baseline masks exactly the text's tokens: [CLS]/<cls>, [SEP] and padding stay as they are
        assert (base_row[positions] == ref).all()
        rest = np.setdiff1d(np.arange(len(row)), positions)
        assert torch.equal(base_row[rest], row[rest]) and (row[rest] == pad).sum() > 0
        t = predictor.labels.index(item.target)
        p_x, p_base = predictor.proba_of(torch.stack([row, base_row]))[:, t]
        assert item.probability == pytest.approx(p_x, abs=1e-6)
        q = item.quality
        assert abs(item.values.sum() - (p_x - p_base)) <= q["convergence_delta"] + 1e-5
        assert q["relative_delta"] == pytest.approx(q["convergence_delta"] / max(abs(p_x - p_base), 1e-12), rel=0.05,
                                                    abs=1e-4)
    assert e.settings["n_steps"] == 32 and e.settings["baseline"] == subject.reference.source
    assert e.settings["truncated_inputs"] == 0 and "embeddings" in e.settings["layer"]


def test_linear_on_tfidf_is_exact(runs):
    predictor = modelyard.load(runs["tfidf"])
    text = "Socket firewall and the dns server with a cable."
    e = explain(predictor, [text, "a b"], method="linear")
    item = e[0]
    model = predictor.model
    t = predictor.labels.index(item.target)
    x = model.vectorizer.transform([text]).toarray()[0].astype(np.float64)
    terms = x * model.coef[t].astype(np.float64)  # each feature's share of the score
    assert item.values.sum() == pytest.approx(terms.sum(), abs=1e-5)
    assert item.values.sum() == pytest.approx(model.scores([text])[0, t] - model.intercept[t], abs=1e-5)
    assert item.quality["completeness_gap"] < 1e-5
    words = ["socket", "firewall", "and", "the", "dns", "server", "with", "cable"]  # "a" is no word to TF-IDF
    assert item.units == words == model.vectorizer.build_analyzer()(text)[:len(words)]
    assert item.positions.tolist() == list(range(len(words)))
    vocab = model.vectorizer.vocabulary_
    best = max((w for w in item.units if w in vocab), key=lambda w: terms[vocab[w]])
    assert item.units[int(np.argmax(item.values))] == best
    assert e[1].units == [] and "input 2 has no word the model reads" in " ".join(e.notes)
    assert "linear score" in e.settings["attributes"]


def test_occlusion_on_tfidf_replaces_one_word_at_a_time(runs):
    predictor = modelyard.load(runs["tfidf"])
    text = "Ping the dns server, then prune the rose."
    item = explain(predictor, [text], method="occlusion")[0]
    assert item.units == ["ping", "the", "dns", "server", "then", "prune", "the", "rose"]
    t = predictor.labels.index(item.target)
    without_dns = "Ping the [UNK] server, then prune the rose."
    p = predictor.predict_proba([text, without_dns])[:, t]
    assert item.values[2] == pytest.approx(p[0] - p[1], abs=1e-9)
    capped = explain(predictor, [text], method="occlusion", max_tokens=3)
    assert capped[0].units == item.units[:3] and "only their first 3 are occluded" in capped.notes[0]


def test_occlusion_works_without_gradients_and_integrated_gradients_says_why_not(int8_run):
    predictor = modelyard.load(int8_run)
    assert predictor.family == "torch-int8"
    e = explain(predictor, TEXTS[:1], method="occlusion")
    item = e[0]
    tokens, positions = real_tokens(predictor, TEXTS[0])
    assert item.units == tokens and item.positions.tolist() == positions
    ids = predictor.transform(TEXTS[:1])
    masked = ids.clone()
    masked[0, positions[2]] = Subject(predictor).reference.value
    t = predictor.labels.index(item.target)
    # each copy on its own: an int8 model's activation scale, so its answer, depends on the rows batched with it
    p_x, p_masked = predictor.proba_of(ids)[0, t], predictor.proba_of(masked)[0, t]
    assert item.values[2] == pytest.approx(p_x - p_masked, abs=1e-6)
    assert e.settings["copies per forward pass"] == 1
    with pytest.raises(ConfigError, match=r"needs gradients.*torch-int8.*Methods that do: occlusion"):
        explain(predictor, TEXTS, method="integrated-gradients")


def test_a_method_for_other_inputs_or_models_is_refused_with_the_list(runs):
    with pytest.raises(ConfigError, match=r"--method grad-cam does not apply to hf: it explains image and sequence "
                                          r"inputs.*Methods that do: integrated-gradients, occlusion"):
        explain(runs["bert"], TEXTS, method="grad-cam")
    with pytest.raises(ConfigError, match=r"--method linear does not apply to text-transformer.*Methods that do: "
                                          r"integrated-gradients, occlusion"):
        explain(runs["transformer"], TEXTS, method="linear")


def test_integrated_gradients_needs_an_embedding_layer_it_knows():
    fake = type("Subject", (), {"module": torch.nn.Linear(3, 3), "model_name": "custom"})()  # a torch text model
    with pytest.raises(ConfigError, match="token embeddings.*hf and text-transformer.*--method occlusion"):
        embedding_layer(fake)


def test_texts_are_read_from_strings_files_and_csv_columns_and_empty_ones_refused(runs, tmp_path, topics_csv):
    path = tmp_path / "texts.txt"
    path.write_text("fresh basil and tomato seeds\n\nping the proxy server\n", encoding="utf-8")
    e = explain(runs["tfidf"], ["some text about a router", str(path)])
    assert e.method == "linear"  # the default for a TF-IDF model
    assert [it.id for it in e] == ["1", "texts.txt:1", "texts.txt:3"]
    assert [it.shown for it in e] == ["some text about a router", "fresh basil and tomato seeds", "ping the proxy server"]
    assert len(explain(runs["tfidf"], topics_csv)) == 36  # the description column of every row
    for bad in ("", "   \n"):
        with pytest.raises(DataError, match="empty text"):
            explain(runs["tfidf"], ["fine text", bad])


def test_the_page_highlights_tokens_and_escapes_the_text(runs, tmp_path):
    long = "Ping the dns server and the proxy. " * 8  # past max_length (32 tokens)
    e = explain(runs["transformer"], [*TEXTS, long], method="occlusion")
    index = e.save(tmp_path / "out")
    page = index.read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;" in page
    shown = html.unescape(re.sub(r"<[^>]+>", "", e.fragment()))  # what a browser displays
    assert all(text in shown for text in [*TEXTS, long])  # each text as written, tags and all, past max_length too
    assert page.count("<span style=\"background:rgba(") >= len(e[0].units) // 2
    assert "predicted <b>" in page and "target <b>" in page
    assert "not read" in page  # the tail past max_length is shown, greyed
    csv = (tmp_path / "out" / "attributions.csv").read_text(encoding="utf-8").splitlines()
    assert csv[0] == "id,unit,position,value" and len(csv) == 1 + sum(len(it.units) for it in e)
