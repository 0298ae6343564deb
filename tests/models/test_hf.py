import json

import numpy as np
import pytest
import torch

import modelyard
from modelyard.errors import ModelError
from modelyard.models import MODELS, create_model, model_tokenizer
from modelyard.models.hf import resolve_pretrained
from tests.conftest import run_cli, tiny_config


def hf_config(csv, model_dir, **model):
    cfg = tiny_config(name="hf", data={"source": f"csv:{csv}", "text": "description", "target": "topic",
                                       "tokenizer": {"max_length": 24}},
                      train={"epochs": 1, "batch_size": 8, "lr": 0.001})
    cfg["model"] = {"name": "hf", "pretrained": str(model_dir), **model}
    return cfg


def build(model_dir, num_classes=3, task="classification", **fields):
    cfg = MODELS.get("hf").config.model_validate({"name": "hf", "pretrained": str(model_dir), **fields})
    tok = model_tokenizer(cfg)
    return create_model(cfg, input_shape=(24,), num_classes=num_classes, kind="text" if task != "lm" else "corpus",
                        vocab_size=tok.tokenizer.get_vocab_size(), pad_id=tok.pad_id or 0, task=task)


# Run in a fresh process with the network cut off: no HF_HUB_OFFLINE in the environment, and any DNS lookup or
# connection is recorded and refused. Loading must need neither (local_files_only=True on modelyard's own calls).
OFFLINE_MINILM = """
import json, os, socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[:2]))
    raise OSError("the network is cut off in this test")
socket.getaddrinfo = socket.create_connection = socket.socket.connect = refuse
import modelyard
env_after_import = [k for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k in os.environ]
import torch
from modelyard.models import MODELS, create_model, model_tokenizer
cfg = MODELS.get("hf").config.model_validate({"name": "hf"})
tok = model_tokenizer(cfg)
model = create_model(cfg, input_shape=(16,), num_classes=4, kind="text", vocab_size=30522, pad_id=0)
enc = tok.tokenizer.encode_batch(["a sound editor", "network tools for the kernel"])
ids = torch.tensor([e.ids[:8] + [0] * (8 - len(e.ids[:8])) for e in enc])
print(json.dumps({"env": env_after_import, "attempts": attempts, "pretrained": cfg.pretrained, "pad": tok.pad_id,
                  "vocab": tok.tokenizer.get_vocab_size(), "shape": list(model(ids).shape),
                  "params": sum(p.numel() for p in model.hf.base_model.parameters())}))
"""


def test_builtin_minilm_loads_offline_and_import_leaves_the_environment_alone():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    proc = subprocess.run([sys.executable, "-c", OFFLINE_MINILM], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert facts["env"] == []  # `import modelyard` no longer turns other code's Hugging Face calls offline
    assert facts["attempts"] == []  # and modelyard's own calls never reach for the network
    assert facts["pretrained"] == "builtin:minilm"  # the default pre-trained text model
    assert facts["pad"] == 0 and facts["vocab"] == 30522
    assert 22_000_000 < facts["params"] < 23_000_000  # the real all-MiniLM-L6-v2 encoder
    assert facts["shape"] == [2, 4]


def test_a_model_that_is_not_on_disk_says_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelError, match=r"not on disk.*nothing is downloaded.*HF_HOME"):
        resolve_pretrained("someorg/some-model")
    with pytest.raises(ModelError, match="unknown builtin model 'builtin:gpt5'"):
        resolve_pretrained("builtin:gpt5")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_pretrained(str(tmp_path / "empty"))


def test_padding_columns_change_nothing(tiny_bert_dir):
    torch.manual_seed(0)
    model = build(tiny_bert_dir).eval()
    ids = torch.tensor([[101, 2000, 2001, 102, 0, 0], [101, 2003, 102, 0, 0, 0]])
    assert torch.allclose(model(ids), model(ids[:, :4]), atol=1e-6)


def test_head_mode_trains_only_the_classifier(tiny_bert_dir):
    model = build(tiny_bert_dir, finetune="head")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("hf.classifier.") for n in trainable)


def test_lora_trains_only_the_adapters_and_the_classifier(tmp_path, topics_csv, tiny_bert_dir):
    run = modelyard.train(hf_config(topics_csv, tiny_bert_dir, finetune="lora", lora={"r": 4}), output=tmp_path,
                          quiet=True)
    m = run.metrics
    assert 0 < m["trainable_fraction"] < 0.2 and m["trainable_parameters"] < m["parameters"]
    # The merged, saved encoder differs from the original only where LoRA adapted it (query, value).
    from safetensors.torch import load_file

    before = load_file(str(tiny_bert_dir / "model.safetensors"))
    after = load_file(str(run.path / "model" / "hf" / "model.safetensors"))
    for name, value in before.items():
        key = name if name in after else f"bert.{name}"
        changed = not torch.equal(value, after[key])
        assert changed == (".query.weight" in name or ".value.weight" in name), name


def test_finetuned_model_loads_with_plain_transformers(tmp_path, topics_csv, tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    run = modelyard.train(hf_config(topics_csv, tiny_bert_dir), output=tmp_path, quiet=True)
    # Longer than the 24 tokens training used (data.tokenizer.max_length), within the 64 positions of the model:
    # what comes after token 24 must be cut off by plain transformers too.
    texts = ["Fresh tomatoes and basil for the garden. " + "a router and a switch for the network " * 6,
             "a router and a switch " * 5 + "fresh tomatoes basil and seeds for the garden " * 3,
             "a short one"]
    ours = modelyard.load(run.path)
    proba = ours.predict_proba(texts)
    folder = run.path / "model" / "hf"
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 24
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok(texts[0])["input_ids"]) > 40  # the texts really are longer than training's 24
    with torch.no_grad():
        theirs = model(**tok(texts, return_tensors="pt", padding=True, truncation=True)).logits.softmax(-1).numpy()
    assert np.allclose(proba, theirs, atol=1e-5)
    assert model.config.id2label == dict(enumerate(json.loads((run.path / "model/modelyard.json").read_text())["labels"]))
    assert model.config.label2id == {label: i for i, label in model.config.id2label.items()}
    # The one-line pipeline a user would write gives the same labels and probabilities.
    classify = pipeline("text-classification", model=str(folder), device="cpu")
    answers = classify(texts, truncation=True, top_k=None)
    assert [max(a, key=lambda d: d["score"])["label"] for a in answers] == list(ours.predict(texts))
    piped = np.array([[{d["label"]: d["score"] for d in a}[label] for label in ours.labels] for a in answers])
    assert np.allclose(proba, piped, atol=1e-5)
    # Saved and reloaded, predict gives identical probabilities; evaluate re-derives the test metrics.
    assert np.array_equal(proba, modelyard.load(run.path).predict_proba(texts))
    assert modelyard.evaluate(run.path)["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])


def test_hf_options_that_do_not_fit_are_clear(tiny_bert_dir, tiny_gpt2_dir):
    with pytest.raises(Exception, match="finetune: head instead of freeze_backbone"):
        MODELS.get("hf").config.model_validate({"name": "hf", "freeze_backbone": True})
    with pytest.raises(ModelError, match="model.lora"):
        build(tiny_bert_dir, finetune="lora", lora={"target_modules": ["no_such_layer"]})
    with pytest.raises(ModelError, match="a causal LM has none"):
        build(tiny_gpt2_dir, task="lm", finetune="head")


def test_causal_hf_model_trains_on_a_corpus_and_generates_with_its_cache(tmp_path, corpus_txt, tiny_gpt2_dir):
    cfg = tiny_config(name="hf-lm", data={"source": f"text:{corpus_txt}", "block_size": 16},
                      train={"epochs": 1, "batch_size": 16, "lr": 0.003})
    cfg["model"] = {"name": "hf", "pretrained": str(tiny_gpt2_dir)}
    run = modelyard.train(cfg, output=tmp_path, quiet=True)
    assert np.isfinite(run.metrics["val"]["perplexity"])
    lm = modelyard.load(run.path)
    # Cached greedy decoding picks what a full forward pass over the growing text picks.
    from modelyard.generation import sample_ids

    prompt = lm.preprocessor.encode("the garden")
    cached = list(sample_ids(lm.model, prompt, max_new_tokens=6, temperature=0))
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(6):
            ids.append(int(lm.model(torch.tensor([ids]))[0, -1].argmax()))
    assert cached == ids[len(prompt):]
    proc = run_cli("generate", run.path, "--prompt", "the garden", "--max-new-tokens", "5", "--seed", "1")
    assert proc.returncode == 0 and proc.stdout.startswith("the garden")


def test_length_sorted_sub_batches_change_no_answer(tiny_bert_dir):
    torch.manual_seed(0)
    model = build(tiny_bert_dir).eval()
    ids = torch.zeros(13, 20, dtype=torch.long)
    for i in range(13):
        n = 3 + (i * 7) % 17
        ids[i, :n] = torch.randint(1000, 2000, (n,))
    with torch.no_grad():
        batched = model(ids)
        alone = torch.cat([model(ids[i:i + 1]) for i in range(13)])
    assert torch.allclose(batched, alone, atol=1e-5)
