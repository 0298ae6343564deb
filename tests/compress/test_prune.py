"""compress --method prune: unstructured zeros, structured removal of neurons, channels and FFN neurons, and the
recovery fine-tune through the normal trainer."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import modelyard
from modelyard.compress import compress
from modelyard.compress.prune import model_widths, prune_ffn, prune_widths
from modelyard.errors import ConfigError
from modelyard.models import MODELS, create_model
from modelyard.runs import RunDir
from tests.compress.test_framework import tree_digest
from tests.conftest import cli_in_process, tiny_config
from tests.models.test_hf import build, hf_config


@pytest.fixture(scope="module")
def mlp_run(digits_run):
    return digits_run.path  # tiny_config(): an MLP with hidden_sizes [32] on digits


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory, topics_csv, tiny_bert_dir):
    return modelyard.train(hf_config(topics_csv, tiny_bert_dir), output=tmp_path_factory.mktemp("hf"), quiet=True).path


def zeros_and_weights(module) -> tuple[int, int]:
    layers = [m for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    return sum(int((m.weight == 0).sum()) for m in layers), sum(m.weight.numel() for m in layers)


def test_unstructured_zeroes_the_amount_and_says_it_is_not_faster(capsys, mlp_run, tmp_path):
    code, out, err = cli_in_process(capsys, "compress", mlp_run, "--method", "prune", "--amount", "0.5",
                                    "--unstructured", "--output", tmp_path, "--speed-iterations", "1")
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1])
    m = json.loads((run / "metrics.json").read_text())
    zeros, total = zeros_and_weights(modelyard.load(run).adapter.module)
    assert m["sparsity"] == pytest.approx(zeros / total) and abs(m["sparsity"] - 0.5) < 0.01
    assert m["parameters"] == m["parent_figures"]["parameters"]  # the zeros are still weights
    assert m["recover_epochs"] == 0 and m["structured"] is False
    assert any("no speed-up" in note for note in m["notes"]) and "no speed-up" in out
    assert m["speed"]["ratio"]["throughput_batch32"] > 0
    assert modelyard.evaluate(run)["accuracy"] == pytest.approx(m["test"]["accuracy"])


def test_unstructured_recovery_keeps_the_zeros(mlp_run, tmp_path):
    run = compress(mlp_run, "prune", amount=0.6, structured=False, recover_epochs=1, output=tmp_path,
                   speed_iterations=1)
    zeros, total = zeros_and_weights(modelyard.load(run.path).adapter.module)
    assert zeros / total >= 0.59 and run.metrics["sparsity"] == pytest.approx(zeros / total)
    assert RunDir(run.path).lineage()["params"]["recover_epochs"] == 1


def test_structured_mlp_is_smaller_and_recovers_through_the_trainer(mlp_run, tmp_path):
    before = tree_digest(Path(mlp_run))
    run = compress(mlp_run, "prune", amount=0.5, output=tmp_path, speed_iterations=1)  # structured, 1 epoch: defaults
    rd, m = RunDir(run.path), run.metrics
    assert tree_digest(Path(mlp_run)) == before
    assert rd.lineage()["method"] == "prune" and rd.lineage()["params"]["recover_epochs"] == 1
    assert rd.splits() == RunDir(mlp_run).splits()  # scored on the parent's own test split
    assert len(rd.history()) == 1  # one recovery epoch, through the normal trainer
    assert m["sizes"]["hidden_sizes"] == {"parent": [32], "this": [16]}
    assert m["parameters"] < 0.6 * m["parent_figures"]["parameters"]
    assert 0 <= m["test_accuracy_before_recovery"] <= 1 and m["recovery_lr"] == pytest.approx(0.001)
    assert m["speed"]["this"]["throughput_batch32"] > 0
    model = modelyard.load(run.path)
    assert json.loads((rd.model_dir / "modelyard.json").read_text())["model"]["hidden_sizes"] == [16]
    assert model.adapter.count_parameters()["parameters"] == m["parameters"]
    start = Path(rd.config().model.pretrained)  # a resume rebuilds the model from the pruned weights in the run
    assert start.is_file() and start.is_relative_to(rd.path.resolve())
    assert modelyard.evaluate(run.path)["accuracy"] == pytest.approx(m["test"]["accuracy"])


def test_structured_lenet5_loses_channels_and_neurons(tmp_path, shapes_dir):
    cfg = tiny_config(data={"source": f"imagefolder:{shapes_dir}"}, train={"epochs": 1})
    cfg["model"] = {"name": "lenet5", "channels": [6, 16], "hidden_sizes": [32]}
    parent = modelyard.train(cfg, output=tmp_path, quiet=True).path
    run = compress(parent, "prune", amount=0.5, recover_epochs=0, output=tmp_path, speed_iterations=1)
    meta = json.loads((Path(run.path) / "model" / "modelyard.json").read_text())
    assert meta["model"]["channels"] == [3, 8] and meta["model"]["hidden_sizes"] == [16]
    assert run.metrics["parameters"] < 0.35 * run.metrics["parent_figures"]["parameters"]
    assert len(modelyard.load(run.path).predict(shapes_dir)) == 36
    assert modelyard.evaluate(run.path)["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])


def fake_parent(module, meta, name="x"):
    from modelyard.adapters import ADAPTERS

    family = meta.get("family", "torch")
    return SimpleNamespace(predictor=SimpleNamespace(meta=meta), adapter=ADAPTERS.get(family).obj(module, meta),
                           family=family, run=SimpleNamespace(path=name))


@pytest.mark.parametrize("spec, shape", [
    ({"name": "mlp", "hidden_sizes": [12, 8], "activation": "gelu"}, (20,)),
    ({"name": "lenet5", "channels": [6, 8], "hidden_sizes": [10]}, (1, 8, 8)),
    ({"name": "cifar-cnn", "channels": [4, 6], "hidden_sizes": [10], "dropout": 0.0}, (3, 8, 8)),
    ({"name": "mnist1d-cnn", "channels": [6, 4], "kernel_size": 3}, (1, 16)),
])
def test_structured_pruning_removes_exactly_the_weakest_units(spec, shape):
    """Scale a chosen half of each layer's units down (their L1 norm, or BatchNorm |gamma|, smallest) and silence
    their outputs: the pruned model must then give exactly the original's answers, whatever the layout that reads
    them (flattened feature maps, pooled side by side)."""
    torch.manual_seed(0)
    cfg = MODELS.get(spec["name"]).config.model_validate(spec)
    module = create_model(cfg, input_shape=shape, num_classes=3).eval()
    gen = torch.Generator().manual_seed(1)
    for w in model_widths(module, spec["name"], cfg.model_dump()):
        producer = module.get_submodule(w.producer)
        units = producer.weight.shape[0]
        removed = torch.randperm(units, generator=gen)[: units // 2]
        with torch.no_grad():
            if w.norm:
                norm = module.get_submodule(w.norm)
                norm.weight.fill_(1.0)
                norm.weight[removed] = 1e-3
                norm.running_var.uniform_(0.5, 2.0)
            else:
                producer.weight[removed] *= 1e-6
        silenced = module.get_submodule(w.norm or w.producer)
        silenced.register_forward_hook(lambda m, i, out, r=removed: out.index_fill(1, r, 0.0))
    meta = {"model": cfg.model_dump(mode="json"), "input_shape": list(shape), "labels": ["a", "b", "c"],
            "model_inputs": {}}
    pruned = prune_widths(fake_parent(module, meta), 0.5)
    x = torch.randn(5, *shape)
    with torch.no_grad():
        torch.testing.assert_close(pruned.adapter.module(x), module(x), rtol=1e-5, atol=1e-5)
    sizes = {k: v["this"] for k, v in pruned.facts["sizes"].items()}
    assert all(new == old // 2 for key in sizes for new, old in zip(sizes[key], spec[key]))


def test_ffn_pruning_removes_exactly_the_weakest_neurons(tiny_bert_dir):
    torch.manual_seed(0)
    wrapper = build(tiny_bert_dir).eval()
    gen = torch.Generator().manual_seed(1)
    for layer in wrapper.hf.base_model.encoder.layer:
        removed = torch.randperm(64, generator=gen)[:16]
        with torch.no_grad():
            layer.intermediate.dense.weight[removed] *= 1e-6
        layer.intermediate.dense.register_forward_hook(lambda m, i, out, r=removed: out.index_fill(-1, r, 0.0))
    meta = {"model": {"name": "hf"}, "labels": ["a", "b", "c"], "family": "hf"}
    pruned = prune_ffn(fake_parent(wrapper, meta), 0.25)
    ids = torch.randint(1000, 2000, (4, 12))
    with torch.no_grad():
        torch.testing.assert_close(pruned.adapter.module(ids), wrapper(ids), rtol=1e-5, atol=1e-5)
    assert pruned.adapter.module.hf.config.intermediate_size == 48
    assert wrapper.hf.config.intermediate_size == 64  # the parent's model is copied, not cut


def test_structured_hf_prunes_ffn_neurons_into_a_plain_hf_model(hf_run, tmp_path):
    from transformers import AutoModelForSequenceClassification

    before = tree_digest(Path(hf_run))
    run = compress(hf_run, "prune", amount=0.5, recover_epochs=0, output=tmp_path, speed_iterations=1)
    assert tree_digest(Path(hf_run)) == before
    folder = Path(run.path) / "model" / "hf"
    assert json.loads((folder / "config.json").read_text())["intermediate_size"] == 32
    plain = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    assert plain.bert.encoder.layer[0].intermediate.dense.out_features == 32
    assert run.metrics["sizes"] == {"intermediate_size": {"parent": 64, "this": 32}}
    assert run.metrics["parameters"] < run.metrics["parent_figures"]["parameters"]
    assert modelyard.evaluate(run.path)["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])


def test_hf_recovery_fine_tunes_the_pruned_model(hf_run, tmp_path):
    run = compress(hf_run, "prune", amount=0.5, output=tmp_path, speed_iterations=1)
    rd = RunDir(run.path)
    assert rd.splits() == RunDir(hf_run).splits() and len(rd.history()) == 1
    assert json.loads((rd.model_dir / "hf" / "config.json").read_text())["intermediate_size"] == 32
    assert (Path(rd.config().model.pretrained) / "config.json").is_file()
    assert run.metrics["recovery_lr"] == pytest.approx(1e-4) and run.metrics["method"] == "prune"


@pytest.mark.parametrize("args, message", [
    (["--amount", "1.5"], "amount"),
    (["--amount", "0"], "amount"),
    (["--amount", "0.99"], "would remove all 32 units of model.hidden_sizes[0]"),
])
def test_an_amount_that_cannot_be_pruned_is_refused_before_anything_is_written(capsys, mlp_run, tmp_path, args,
                                                                              message):
    code, _, err = cli_in_process(capsys, "compress", mlp_run, "--method", "prune", *args, "--output", tmp_path)
    assert code == 2 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spec, message", [
    ({"name": "resnet18"}, "structured prune knows .*mlp.*resnet18. Use --unstructured"),
    ({"name": "mlp", "hidden_sizes": []}, "no hidden layer or channel to remove .*use --unstructured"),
])
def test_a_model_structured_pruning_cannot_cut_is_told_to_use_unstructured(spec, message):
    cfg = MODELS.get(spec["name"]).config.model_validate(spec)
    module = create_model(cfg, input_shape=(3, 16, 16), num_classes=2)
    meta = {"model": cfg.model_dump(mode="json"), "input_shape": [3, 16, 16], "labels": ["a", "b"], "model_inputs": {}}
    with pytest.raises(ConfigError, match=message):
        prune_widths(fake_parent(module, meta), 0.5)


def test_prune_does_not_apply_to_an_estimator_or_a_language_model(capsys, tmp_path, topics_csv, corpus_txt):
    cfg = tiny_config(data={"source": f"csv:{topics_csv}", "text": "description", "target": "topic"})
    cfg["model"] = {"name": "tfidf-linear"}
    tfidf = modelyard.train(cfg, output=tmp_path, quiet=True).path
    lm_cfg = tiny_config(name="lm", data={"source": f"text:{corpus_txt}", "block_size": 16,
                                          "tokenizer": {"vocab_size": 120}},
                         train={"epochs": 1, "batch_size": 16})
    lm_cfg["model"] = {"name": "gpt", "d_model": 16, "n_layers": 1, "n_heads": 2}
    lm = modelyard.train(lm_cfg, output=tmp_path, quiet=True).path
    for run, what in ((tfidf, "estimator model (tfidf-linear)"), (lm, "language model")):
        code, _, err = cli_in_process(capsys, "compress", run, "--method", "prune", "--output", tmp_path / "out")
        assert code == 2 and "prune does not apply" in err and what in err
    assert not (tmp_path / "out").exists()
