"""onnx and onnx-int8: torch.onnx export run by ONNX Runtime, its int8 quantisations, and the onnx model family."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import modelyard
from modelyard.compress import compress
from modelyard.errors import ConfigError, RunError
from modelyard.runs import RunDir
from tests.conftest import cli_in_process, tiny_config


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode() + f.read_bytes())
    return h.hexdigest()


def split_of(run):
    from modelyard.data import read_run_splits

    raw, parts, _ = read_run_splits(RunDir(run))
    return raw.take(parts["test"])


def saved_proba(run) -> np.ndarray:
    frame = pd.read_csv(Path(run) / "predictions" / "test.csv")
    return frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy()


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    cfg = tiny_config(name="cnn", model={"name": "lenet5", "channels": [6, 16], "hidden_sizes": [120, 84]},
                      train={"epochs": 2})
    return modelyard.train(cfg, output=tmp_path_factory.mktemp("runs"), quiet=True).path


@pytest.fixture(scope="module")
def text_hf_run(tmp_path_factory, topics_csv, tiny_bert_dir):
    cfg = tiny_config(name="hf", data={"source": f"csv:{topics_csv}", "text": "description", "target": "topic",
                                       "tokenizer": {"max_length": 24}},
                      train={"epochs": 2, "batch_size": 8, "lr": 0.003})
    cfg["model"] = {"name": "hf", "pretrained": str(tiny_bert_dir)}
    return modelyard.train(cfg, output=tmp_path_factory.mktemp("runs"), quiet=True).path


@pytest.fixture(scope="module")
def derived(tmp_path_factory):
    """compress(run, method) once per (run, method) in this module, with one timing call per figure."""
    made = {}

    def make(run, method, **params):
        key = (str(run), method, tuple(sorted(params.items())))
        if key not in made:
            made[key] = compress(run, method, output=tmp_path_factory.mktemp("derived"), speed_iterations=1,
                                 **params)
        return made[key]

    return make


# ---------------------------------------------------------------- fp32: the same answers as torch

def test_onnx_cnn_gives_the_torch_probabilities_and_reloads(cnn_run, derived):
    before = tree_digest(cnn_run)
    result = derived(cnn_run, "onnx")
    assert tree_digest(cnn_run) == before  # the parent is only read
    meta = json.loads((result.path / "model" / "modelyard.json").read_text())
    assert (meta["family"], meta["format_version"], meta["weights"]) == ("onnx", 2, "model.onnx")
    assert meta["onnx"]["opset"] == 17 and meta["onnx"]["inputs"] == ["input"]
    assert {p.name for p in (result.path / "model").iterdir()} == {"model.onnx", "modelyard.json",
                                                                   "explain-reference.safetensors"}
    assert RunDir(result.path).current_status() == "completed"

    test = split_of(cnn_run)
    torch_proba = modelyard.load(cnn_run).predict_raw(test)
    model = modelyard.load(result.path)
    assert model.family == "onnx" and model.adapter.module is None
    onnx_proba = model.predict_raw(test)
    np.testing.assert_allclose(onnx_proba, torch_proba, atol=1e-4)
    np.testing.assert_allclose(saved_proba(result.path), onnx_proba, atol=1e-6)  # reloaded == what was scored
    assert result.metrics["parameters"] == modelyard.load(cnn_run).adapter.count_parameters()["parameters"]
    assert modelyard.evaluate(result.path)["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"])
    images = np.stack(test.x[:3]) if isinstance(test.x, list) else test.x[:3]
    assert list(model.predict(images)) == list(modelyard.load(cnn_run).predict(images))


def test_onnx_hf_classifier_gives_the_torch_probabilities_and_keeps_the_tokenizer(text_hf_run, derived):
    result = derived(text_hf_run, "onnx")
    folder = result.path / "model"
    meta = json.loads((folder / "modelyard.json").read_text())
    assert meta["onnx"]["inputs"] == ["input_ids", "attention_mask"] and "transformer_optimizer" not in meta["onnx"]
    hf_files = {p.name for p in (folder / "hf").iterdir()}
    assert {"config.json", "tokenizer.json"} <= hf_files and not any(n.endswith(".safetensors") for n in hf_files)

    test = split_of(text_hf_run)
    parent, model = modelyard.load(text_hf_run), modelyard.load(result.path)
    np.testing.assert_allclose(model.predict_raw(test), parent.predict_raw(test), atol=1e-4)
    np.testing.assert_allclose(saved_proba(result.path), model.predict_raw(test), atol=1e-6)
    assert model.preprocessor.tokenizer.get_vocab_size() == parent.preprocessor.tokenizer.get_vocab_size()
    assert modelyard.evaluate(result.path)["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"])


def test_the_transformer_optimiser_fuses_attention_with_the_same_answers(text_hf_run, cnn_run, derived, tmp_path):
    result = derived(text_hf_run, "onnx", transformer_optimizer=True)
    meta = json.loads((result.path / "model" / "modelyard.json").read_text())
    assert meta["onnx"]["transformer_optimizer"]["fused"]["Attention"] == 2  # both layers of the tiny BERT
    test = split_of(text_hf_run)
    np.testing.assert_allclose(modelyard.load(result.path).predict_raw(test),
                               modelyard.load(text_hf_run).predict_raw(test), atol=1e-4)
    with pytest.raises(ConfigError, match="--transformer-optimizer fuses the attention of Hugging Face encoders"):
        compress(cnn_run, "onnx", output=tmp_path, transformer_optimizer=True)


def test_texts_sorted_by_length_and_trimmed_give_the_answers_of_whole_padded_batches(text_hf_run, derived):
    model = modelyard.load(derived(text_hf_run, "onnx").path)
    words = "network kernel audio editor library graphics font server shell daemon".split()
    texts = [" ".join(words[: 1 + i % 10] * (1 + i % 3)) for i in range(21)]  # 21 mixed lengths: 3 sub-batches
    ids = model.transform(texts)
    sorted_trimmed = model.adapter.logits(ids).numpy()
    keep = (ids != model.preprocessor.pad_id).long()
    keep[:, 0] = 1
    whole = model.adapter.model.run(None, {"input_ids": ids.numpy(), "attention_mask": keep.numpy()})[0]
    np.testing.assert_allclose(sorted_trimmed, whole, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(sorted_trimmed, modelyard.load(text_hf_run).adapter.logits(ids).numpy(),
                                   atol=1e-4)


def test_a_fused_graph_that_answers_differently_is_not_kept(text_hf_run):
    from modelyard.compress.export import _fuse_transformer, export_graph

    predictor = modelyard.load(text_hf_run)
    graph = export_graph(predictor, fuse=True)
    before, info = graph.path.read_bytes(), {k: v for k, v in graph.info.items() if k != "transformer_optimizer"}
    graph.info = dict(info)
    _fuse_transformer(graph, predictor.adapter.module.hf.config, lambda path: "scores differ by up to 0.5")
    assert graph.path.read_bytes() == before and graph.info == info
    assert "did not answer as the torch model does (scores differ by up to 0.5)" in graph.notes[-1]


# ---------------------------------------------------------------- int8

def test_onnx_int8_calibrates_the_cnn_statically(cnn_run, derived):
    result = derived(cnn_run, "onnx-int8", calibration_batches=3)
    quant = json.loads((result.path / "model" / "modelyard.json").read_text())["onnx"]["quantization"]
    assert quant["mode"] == "static" and quant["format"] == "QDQ"
    assert quant["calibration"]["batches"] == 3 and quant["calibration"]["examples"] == 3 * 64
    m = result.metrics
    assert m["test"]["accuracy"] >= m["parent_figures"]["test"]["accuracy"] - 0.04
    assert m["bytes_on_disk"] < 0.6 * m["parent_figures"]["bytes_on_disk"]
    assert m["int8_weight_fraction"] > 0.9
    test = split_of(cnn_run)
    np.testing.assert_allclose(saved_proba(result.path), modelyard.load(result.path).predict_raw(test), atol=1e-6)
    assert modelyard.evaluate(result.path)["accuracy"] == pytest.approx(m["test"]["accuracy"])


def test_onnx_int8_quantises_a_text_model_dynamically_embeddings_included(text_hf_run, derived):
    result = derived(text_hf_run, "onnx-int8")
    meta = json.loads((result.path / "model" / "modelyard.json").read_text())
    quant = meta["onnx"]["quantization"]
    assert quant["mode"] == "dynamic" and quant["weights"] == "int8, per channel" and "Gather" in quant["ops"]
    m = result.metrics
    assert m["int8_weight_fraction"] > 0.95  # the embedding matrix (most of a small BERT) is int8 too
    fp32 = derived(text_hf_run, "onnx").path / "model" / "model.onnx"
    assert (result.path / "model" / "model.onnx").stat().st_size < 0.3 * fp32.stat().st_size
    assert m["test"]["accuracy"] >= m["parent_figures"]["test"]["accuracy"] - 0.1
    test = split_of(text_hf_run)
    int8, parent = modelyard.load(result.path).predict_raw(test), modelyard.load(text_hf_run).predict_raw(test)
    assert np.abs(int8 - parent).max() < 0.05
    np.testing.assert_allclose(saved_proba(result.path), int8, atol=1e-6)


def test_calibration_batches_on_a_text_model_is_refused(text_hf_run, tmp_path):
    with pytest.raises(ConfigError, match="quantised dynamically.*drop --calibration-batches"):
        compress(text_hf_run, "onnx-int8", output=tmp_path, calibration_batches=2)
    assert not list(tmp_path.iterdir())


def test_quantize_onnx_dynamic_takes_an_onnx_parent(text_hf_run, cnn_run, derived):
    from modelyard.compress.base import open_parent
    from modelyard.compress.export import quantize_onnx_dynamic

    parent = open_parent(derived(text_hf_run, "onnx").path)
    out = quantize_onnx_dynamic(parent)
    assert out.adapter.graph["quantization"]["mode"] == "dynamic" and out.facts["int8_weight_fraction"] > 0.95
    ids = parent.predictor.transform(["a sound editor", "kernel network tools"])
    assert np.abs(out.adapter.logits(ids).numpy() - parent.adapter.logits(ids).numpy()).max() < 0.1
    with pytest.raises(ConfigError, match="quantised already"):
        quantize_onnx_dynamic(open_parent(derived(text_hf_run, "onnx-int8").path))
    cnn = quantize_onnx_dynamic(open_parent(derived(cnn_run, "onnx").path))  # its Gemm layers, as MatMulInteger
    assert 0.5 < cnn.facts["int8_weight_fraction"] < 1  # the convolutions stay fp32


# ---------------------------------------------------------------- what does not apply

def test_an_unsupported_operator_is_named_and_leaves_no_run(cnn_run, tmp_path, capsys, monkeypatch):
    from modelyard.models.cnn import LeNet5

    forward = LeNet5.forward
    monkeypatch.setattr(LeNet5, "forward", lambda self, x: torch.special.erfcx(forward(self, x)))
    before = tree_digest(cnn_run)
    code, out, err = cli_in_process(capsys, "compress", cnn_run, "--method", "onnx", "--output", tmp_path)
    assert code == 2, err
    assert "aten::special_erfcx" in err and "bf16" in err  # the operator, and a method that works instead
    assert "Traceback" not in err and "graph(" not in out + err  # no exporter dump of the traced graph
    assert not list(tmp_path.iterdir())  # no derived run, half-written or otherwise
    assert tree_digest(cnn_run) == before


def test_a_forward_that_branches_on_the_batch_size_is_caught_before_anything_is_written(cnn_run, tmp_path,
                                                                                         monkeypatch):
    from modelyard.models.cnn import LeNet5

    forward = LeNet5.forward
    monkeypatch.setattr(LeNet5, "forward", lambda self, x: forward(self, x) * (2.0 if x.shape[0] == 2 else 1.0))
    with pytest.raises(ConfigError, match="does not answer as the torch model does.*control flow.*bf16"):
        compress(cnn_run, "onnx", output=tmp_path)
    assert not list(tmp_path.iterdir())


def test_estimators_and_language_models_are_refused_by_the_framework(topics_csv, corpus_txt, tmp_path):
    from modelyard.compress.export import serving_copy

    tfidf = tiny_config(name="tfidf", data={"source": f"csv:{topics_csv}", "text": "description", "target": "topic"})
    tfidf["model"] = {"name": "tfidf-linear"}
    run = modelyard.train(tfidf, output=tmp_path / "runs", quiet=True).path
    with pytest.raises(ConfigError, match=r"onnx does not apply .*estimator model \(tfidf-linear\)"):
        compress(run, "onnx", output=tmp_path / "out")
    with pytest.raises(ConfigError, match=r"--runtime onnx: .* family 'estimator' \(tfidf-linear\).*--runtime auto"):
        serving_copy(modelyard.load(run), cache=tmp_path / "cache")
    lm = tiny_config(name="lm", data={"source": f"text:{corpus_txt}", "block_size": 8, "tokenizer": {"kind": "char"}},
                     train={"epochs": 1, "batch_size": 32})
    lm["model"] = {"name": "gpt", "d_model": 8, "n_layers": 1, "n_heads": 1}
    run = modelyard.train(lm, output=tmp_path / "runs", quiet=True).path
    with pytest.raises(ConfigError, match="onnx-int8 does not apply .*language model"):
        compress(run, "onnx-int8", output=tmp_path / "out")
    with pytest.raises(ConfigError, match=r"--runtime onnx: .* language model \(gpt\)"):
        serving_copy(modelyard.load(run), cache=tmp_path / "cache")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


# ---------------------------------------------------------------- the onnx model folder is checked

def edited_copy(derived_run, tmp_path, edit) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(Path(derived_run) / "model", folder)
    meta = json.loads((folder / "modelyard.json").read_text())
    edit(meta)
    (folder / "modelyard.json").write_text(json.dumps(meta))
    return folder


def test_a_graph_that_does_not_fit_modelyard_json_is_refused(cnn_run, derived, tmp_path):
    run = derived(cnn_run, "onnx").path
    folder = edited_copy(run, tmp_path / "a", lambda m: m.update(input_shape=[1, 16, 16],
                                                                 preprocessing={**m["preprocessing"],
                                                                                "size": [16, 16]}))
    with pytest.raises(RunError, match=r"does not fit|input_shape"):
        modelyard.load(folder)
    folder = edited_copy(run, tmp_path / "b", lambda m: m["onnx"].update(inputs=["pixels"]))
    with pytest.raises(RunError, match=r"inputs are \['input'\].*\['pixels'\]"):
        modelyard.load(folder)
    folder = edited_copy(run, tmp_path / "c", lambda m: m.update(labels=m["labels"][:-1]))
    with pytest.raises(RunError, match=r"not \(batch, 9\) scores"):
        modelyard.load(folder)
    folder = edited_copy(run, tmp_path / "d", lambda m: None)
    (folder / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(RunError, match="not an ONNX model that ONNX Runtime can run"):
        modelyard.load(folder)
