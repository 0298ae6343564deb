import json

import numpy as np
import pytest

import modelyard
from modelyard.config import load_config
from modelyard.data import build_data
from modelyard.errors import DataError
from tests.conftest import run_cli, tiny_config


def lm_config(source, **data):
    cfg = tiny_config(name="lm", data={"source": source, "block_size": 16,
                                       "tokenizer": {"kind": "bpe", "vocab_size": 120}, **data},
                      train={"epochs": 2, "batch_size": 16, "lr": 0.01})
    cfg["model"] = {"name": "gpt", "d_model": 16, "n_layers": 1, "n_heads": 2}
    return cfg


def test_blocks_are_the_stream_shifted_by_one(corpus_txt):
    bundle = build_data(load_config(lm_config(f"text:{corpus_txt}")).data, seed=0)
    x, y = bundle.train[[0, 1]]
    assert x.shape == y.shape == (2, 16)
    assert np.array_equal(x[0, 1:], y[0, :-1]) and y[0, -1] == x[1, 0]
    assert bundle.task == "lm" and bundle.test is None and bundle.labels == []
    assert len(bundle.texts["val"]) > 0 and not set(bundle.texts["val"]) & set(bundle.texts["train"])


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_tokeniser_round_trip(corpus_txt, kind):
    cfg = load_config(lm_config(f"text:{corpus_txt}", tokenizer={"kind": kind, "vocab_size": 120})).data
    pre = build_data(cfg, seed=0).preprocessor
    text = corpus_txt.read_text().splitlines()[0]
    assert pre.decode(pre.encode(text)).strip() == text


def test_a_folder_of_text_files_is_one_corpus(tmp_path, corpus_txt):
    lines = corpus_txt.read_text().splitlines()
    (tmp_path / "a.txt").write_text("\n".join(lines[:100]))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("\n".join(lines[100:200]))
    bundle = build_data(load_config(lm_config(f"text:{tmp_path}")).data, seed=0)
    assert len(bundle.texts["train"]) + len(bundle.texts["val"]) == 200


def test_non_utf8_corpus_names_the_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"fine line\nanother\ncaf\xe9 au lait\n")
    with pytest.raises(DataError, match=r"c.txt: line 3 is not valid UTF-8"):
        build_data(load_config(lm_config(f"text:{path}")).data, seed=0)


@pytest.mark.parametrize("content, message", [("\n  \n\n", "holds no text"), (None, "no such file or folder")])
def test_empty_or_missing_corpus(tmp_path, content, message):
    path = tmp_path / "c.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        build_data(load_config(lm_config(f"text:{path}")).data, seed=0)


def test_corpus_too_small_for_one_block(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a short line\nanother short one\nand a third\n")
    with pytest.raises(DataError, match="too few for one block of data.block_size=64"):
        build_data(load_config(lm_config(f"text:{path}", block_size=64, split={"val": 0.34})).data, seed=0)


def test_gpt_trains_reports_perplexity_and_generates(tmp_path, corpus_txt):
    run = modelyard.train(lm_config(f"text:{corpus_txt}"), output=tmp_path, quiet=True)
    val = run.metrics["val"]
    assert np.isfinite(val["perplexity"]) and val["perplexity"] < val["unigram_perplexity"]
    assert all("val_perplexity" in row for row in (json.loads(l) for l in (run.path / "history.jsonl").open()))
    assert "unigram baseline" in run.report_path.read_text()
    lm = modelyard.load(run.path)
    a = lm.complete("the garden", max_new_tokens=10, seed=5)
    assert a == lm.complete("the garden", max_new_tokens=10, seed=5) and a.strip()

    proc = run_cli("generate", run.path, "--prompt", "the garden", "--max-new-tokens", "10", "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("the garden" + a).strip()
    proc = run_cli("predict", run.path, corpus_txt)
    assert proc.returncode == 2 and "use `modelyard generate" in proc.stderr
    proc = run_cli("evaluate", run.path, "--json")
    assert proc.returncode == 0 and '"perplexity"' in proc.stdout
    assert [f.name.split("-")[0] for f in (run.path / "evaluations").iterdir()] == ["val"]  # the split it scored


def test_generate_refuses_a_classifier_and_bad_arguments(digits_run):
    proc = run_cli("generate", digits_run.path, "--prompt", "hello")
    assert proc.returncode == 2 and "does not generate text" in proc.stderr
    proc = run_cli("generate", digits_run.path, "--prompt", "hello", "--temperature", "-1")
    assert proc.returncode == 2 and "temperature" in proc.stderr


def test_lm_rejects_a_class_metric_monitor(tmp_path, corpus_txt):
    from modelyard.errors import ConfigError

    with pytest.raises(ConfigError, match="val_f1_macro needs classes"):
        modelyard.train(lm_config(f"text:{corpus_txt}") | {"train": {"epochs": 1, "monitor": "val_f1_macro"}},
                        output=tmp_path, quiet=True)
