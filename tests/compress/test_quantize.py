"""int8-dynamic on torch and Hugging Face classifiers: a derived run of family torch-int8, saved without pickle,
that loads back to exactly the model that was scored."""

import copy
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import modelyard
from modelyard.adapters.quantized import Int8Adapter, quantize_module
from modelyard.compress import compress
from modelyard.data import read_run_splits
from modelyard.errors import ConfigError, RunError
from modelyard.runs import RunDir
from tests.conftest import cli_in_process, tiny_config


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode() + f.read_bytes())
    return h.hexdigest()


def text_config(csv, **model):
    cfg = tiny_config(name="text", data={"source": f"csv:{csv}", "text": "description", "target": "topic",
                                         "tokenizer": {"max_length": 24}},
                      train={"epochs": 3, "batch_size": 8, "lr": 0.003})
    cfg["model"] = model
    return cfg


def quantised(parent_path: Path, output: Path):
    """The parent's digest before and after int8-dynamic, and the derived run."""
    before = tree_digest(parent_path)
    run = compress(parent_path, "int8-dynamic", output=output, speed_iterations=1)
    return before, tree_digest(parent_path), run


@pytest.fixture(scope="module")
def mlp(digits_run, tmp_path_factory):
    return digits_run, *quantised(digits_run.path, tmp_path_factory.mktemp("int8"))


@pytest.fixture(scope="module")
def bert(tmp_path_factory, topics_csv, tiny_bert_dir):
    parent = modelyard.train(text_config(topics_csv, name="hf", pretrained=str(tiny_bert_dir)),
                             output=tmp_path_factory.mktemp("runs"), quiet=True)
    return parent, *quantised(parent.path, tmp_path_factory.mktemp("int8"))


@pytest.fixture(scope="module")
def transformer(tmp_path_factory, topics_csv):
    parent = modelyard.train(text_config(topics_csv, name="text-transformer", d_model=16, n_heads=2, n_layers=1),
                             output=tmp_path_factory.mktemp("runs"), quiet=True)
    return parent, *quantised(parent.path, tmp_path_factory.mktemp("int8"))


@pytest.mark.parametrize("case", ["mlp", "bert", "transformer"])
def test_int8_run_is_smaller_scores_near_its_parent_and_holds_no_pickle(case, request):
    parent, before, after, run = request.getfixturevalue(case)
    assert before == after  # the parent's folder is only read
    m = run.metrics
    assert m["method"] == "int8-dynamic"
    # within 5 points, or one example of the text runs' six test texts
    assert abs(m["test"]["accuracy"] - parent.metrics["test"]["accuracy"]) <= max(0.05, 1.01 / m["test"]["n"])
    assert m["bytes_on_disk"] < m["parent_figures"]["bytes_on_disk"]
    assert m["parameters"] == parent.metrics["parameters"]  # elements of the original weights, int8 or not
    meta = json.loads((run.path / "model" / "modelyard.json").read_text())
    assert meta["family"] == "torch-int8" and meta["format_version"] == 2 and meta["int8"]["linear_layers"] >= 2
    files = [p.name for p in (run.path / "model").rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith((".pt", ".pth", ".bin", ".pkl", ".pickle"))], files
    assert modelyard.evaluate(run.path)["accuracy"] == pytest.approx(m["test"]["accuracy"])


@pytest.mark.parametrize("case", ["mlp", "bert", "transformer"])
def test_loading_gives_exactly_the_probabilities_of_the_quantised_model(case, request):
    parent, _, _, run = request.getfixturevalue(case)
    source = modelyard.load(parent.path)
    raw, parts, _ = read_run_splits(RunDir(parent.path))
    test = raw.take(parts["test"])
    quantised_here = Int8Adapter(quantize_module(copy.deepcopy(source.adapter.module)))
    expected = quantised_here.proba_raw(test, source.preprocessor)
    assert np.array_equal(modelyard.load(run.path).predict_raw(test), expected)
    scored = pd.read_csv(run.path / "predictions" / "test.csv")
    assert np.allclose(scored[[c for c in scored.columns if c.startswith("prob_")]].to_numpy(), expected, atol=1e-12)
    # int8 moves the float model's probabilities a little
    assert 0 < np.abs(expected - source.predict_raw(test)).max() < 0.1


def test_a_hugging_face_folder_keeps_config_and_tokenizer_but_no_float_weights(bert):
    _, _, _, run = bert
    hf = run.path / "model" / "hf"
    assert (hf / "config.json").is_file() and (hf / "tokenizer.json").is_file()
    assert not list(hf.glob("*.safetensors"))
    meta = json.loads((run.path / "model" / "modelyard.json").read_text())
    assert meta["base_family"] == "hf" and meta["int8"]["embedding_layers"] == 3  # word, position, token type
    assert json.loads((hf / "config.json").read_text())["id2label"] == {str(i): lab for i, lab
                                                                       in enumerate(meta["labels"])}


def test_quantised_embeddings_take_sliced_batches():
    from modelyard.models import MODELS, create_model

    cfg = MODELS.get("text-transformer").config.model_validate({"name": "text-transformer", "d_model": 16,
                                                                "n_heads": 2, "n_layers": 1})
    model = quantize_module(create_model(cfg, input_shape=(12,), num_classes=3, vocab_size=50, pad_id=0))
    ids = torch.randint(1, 50, (4, 12))
    with torch.no_grad():
        assert torch.equal(model(ids[:, :6]), model(ids[:, :6].contiguous()))  # a column slice is not contiguous


def test_a_damaged_int8_folder_is_named(mlp, bert, tmp_path):
    import shutil

    _, _, _, run = mlp
    folder = tmp_path / "model"
    shutil.copytree(run.path / "model", folder)
    shutil.copy(bert[3].path / "model" / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(RunError, match="does not fit the int8 model.*(missing|unexpected) tensor"):
        modelyard.load(folder)
    meta = json.loads((folder / "modelyard.json").read_text())
    meta["base_family"] = "tensorflow"
    (folder / "modelyard.json").write_text(json.dumps(meta))
    with pytest.raises(RunError, match="base_family 'tensorflow' is none of torch, hf"):
        modelyard.load(folder)


def test_an_int8_model_runs_on_the_cpu_only(mlp):
    with pytest.raises(ConfigError, match="CPU only; load it with device='cpu'"):
        modelyard.load(mlp[3].path, device="cuda")


def test_int8_does_not_apply_to_an_estimator_or_a_language_model(capsys, tmp_path, topics_csv, corpus_txt):
    cfg = tiny_config(data={"source": f"csv:{topics_csv}", "text": "description", "target": "topic"})
    cfg["model"] = {"name": "tfidf-linear"}
    tfidf = modelyard.train(cfg, output=tmp_path, quiet=True).path
    lm_cfg = tiny_config(name="lm", data={"source": f"text:{corpus_txt}", "block_size": 16,
                                          "tokenizer": {"vocab_size": 120}}, train={"epochs": 1, "batch_size": 16})
    lm_cfg["model"] = {"name": "gpt", "d_model": 16, "n_layers": 1, "n_heads": 2}
    lm = modelyard.train(lm_cfg, output=tmp_path, quiet=True).path
    for run, what in ((tfidf, "estimator model (tfidf-linear)"), (lm, "language model")):
        with pytest.raises(ConfigError, match=rf"int8-dynamic does not apply .*{re.escape(what)}"):
            compress(run, "int8-dynamic", output=tmp_path / "out")
        code, _, err = cli_in_process(capsys, "compress", run, "--method", "int8-dynamic", "--output", tmp_path / "out")
        assert code == 2 and "int8-dynamic does not apply" in err and what in err
    assert not (tmp_path / "out").exists()


def test_on_an_onnx_parent_int8_dynamic_is_onnx_runtimes_quantiser(bert, tmp_path):
    parent = bert[0]
    onnx_run = compress(parent.path, "onnx", output=tmp_path, speed_iterations=1)
    run = compress(onnx_run.path, "int8-dynamic", output=tmp_path, speed_iterations=1)
    meta = json.loads((run.path / "model" / "modelyard.json").read_text())
    assert meta["family"] == "onnx" and meta["lineage"]["method"] == "int8-dynamic"
    assert meta["onnx"]["quantization"]["mode"] == "dynamic"
    assert run.metrics["bytes_on_disk"] < onnx_run.metrics["bytes_on_disk"]


def test_the_flop_count_of_an_int8_model_is_its_float_parents(mlp):
    from modelyard.value.measure import flops_per_example

    parent, _, _, run = mlp
    raw, parts, _ = read_run_splits(RunDir(parent.path))
    pool = raw.take(parts["test"]).x
    assert flops_per_example(modelyard.load(run.path), pool) == flops_per_example(modelyard.load(parent.path), pool) > 0
