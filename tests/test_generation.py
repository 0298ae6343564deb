"""Generation's edge cases, from Python and from the CLI, on the cheapest language model there is.

The model is a randomly initialised one-layer gpt with a character tokenizer, saved as a model folder once per
session: sampling is exercised, not learned, so no training is needed. CLI cases run in-process through the
entry point (exit status and stderr as a user sees them); one runs as a real subprocess, for a prompt that is
not UTF-8 on the command line.
"""

import subprocess
import sys

import pytest
import torch

from modelyard.errors import ConfigError
from modelyard.generation import GREEDY_BELOW, MAX_SEED, sample_ids
from tests.conftest import cli_in_process as cli, tiny_config

CORPUS = ["the garden grows tomatoes", "basil and thyme in pots", "a router and a switch", "kernel tools"]


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """A saved and reloaded `LanguageModel`: gpt (d_model 8, one layer) over about 30 characters."""
    import modelyard
    from modelyard.artifact import save_artifact
    from modelyard.config import load_config
    from modelyard.data.base import RawData
    from modelyard.data.corpus import CorpusPreprocessor
    from modelyard.models import create_model

    spec = tiny_config(name="tiny-lm", data={"source": "text:unused.txt", "block_size": 8,
                                             "tokenizer": {"kind": "char"}})
    spec["model"] = {"name": "gpt", "d_model": 8, "n_layers": 1, "n_heads": 1, "dropout": 0.0}
    cfg = load_config(spec)
    pre = CorpusPreprocessor.fit(RawData(x=CORPUS, y=None, kind="corpus"), cfg.data)
    torch.manual_seed(0)
    model = create_model(cfg.model, input_shape=pre.input_shape, num_classes=0, kind="corpus", **pre.model_inputs)
    folder = tmp_path_factory.mktemp("tiny-lm")
    save_artifact(folder, model, model_cfg=cfg.model, input_shape=pre.input_shape, labels=[], preprocessor=pre,
                  experiment="tiny-lm", model_inputs=pre.model_inputs, task="lm")
    return modelyard.load(folder)


def greedy(lm, ids, n):
    return list(sample_ids(lm.model, ids, max_new_tokens=n, temperature=0))


def test_top_k_zero_samples_from_every_token_and_a_negative_one_is_refused(tiny_lm, capsys):
    prompt = tiny_lm.preprocessor.encode("the ")
    vocab = tiny_lm.preprocessor.tokenizer.get_vocab_size()
    every = list(sample_ids(tiny_lm.model, prompt, max_new_tokens=12, temperature=1.0, top_k=None, seed=3))
    assert list(sample_ids(tiny_lm.model, prompt, max_new_tokens=12, temperature=1.0, top_k=0, seed=3)) == every
    assert list(sample_ids(tiny_lm.model, prompt, max_new_tokens=12, temperature=1.0, top_k=vocab, seed=3)) == every
    assert tiny_lm.complete("the ", top_k=0, seed=3) == tiny_lm.complete("the ", top_k=None, seed=3)
    # Not a no-op: top_k 1 is greedy, which sampling from every token at temperature 1 is not (12 tokens).
    assert list(sample_ids(tiny_lm.model, prompt, max_new_tokens=12, temperature=1.0, top_k=1, seed=3)) != every
    with pytest.raises(ConfigError, match=r"top_k \(--top-k\) must be 0 or more, got -1; use 0"):
        sample_ids(tiny_lm.model, prompt, max_new_tokens=3, top_k=-1)  # refused when called, before any token
    with pytest.raises(ConfigError, match="top_k"):
        tiny_lm.generate("the ", top_k=-2)
    status, out, err = cli(capsys, "generate", tiny_lm.model_dir, "--prompt", "the ", "--top-k", "-1")
    assert status == 2 and "--top-k" in err and "Traceback" not in err and out == ""
    status, out, _ = cli(capsys, "generate", tiny_lm.model_dir, "--prompt", "the ", "--top-k", "0", "--seed", "3",
                         "--max-new-tokens", "50", "--temperature", "0.8")
    assert status == 0 and out == "the " + tiny_lm.complete("the ", top_k=0, seed=3, temperature=0.8) + "\n"


def test_a_prompt_with_no_tokens_starts_a_new_document(tiny_lm, capsys):
    pre = tiny_lm.preprocessor
    assert pre.encode("") == []
    ids = list(sample_ids(tiny_lm.model, [pre.eos_id], max_new_tokens=10, temperature=0, stop_id=pre.eos_id))
    expected = pre.decode([t for t in ids if t != pre.eos_id])
    assert expected  # the case is not vacuous: the model writes something after the end-of-text token
    assert tiny_lm.complete("", max_new_tokens=10, temperature=0) == expected
    with pytest.raises(ConfigError, match="at least one prompt token.*end-of-text"):
        sample_ids(tiny_lm.model, [], max_new_tokens=3)
    status, out, err = cli(capsys, "generate", tiny_lm.model_dir, "--prompt", "", "--max-new-tokens", "10",
                           "--temperature", "0")
    assert status == 0 and out == expected + "\n", err


def test_max_new_tokens_zero_gives_the_prompt_back(tiny_lm, capsys):
    assert list(sample_ids(tiny_lm.model, [1, 2, 3], max_new_tokens=0)) == []
    assert tiny_lm.complete("the garden", max_new_tokens=0) == ""
    assert len(greedy(tiny_lm, [1, 2, 3], 5)) == 5  # exactly as many as asked
    status, out, err = cli(capsys, "generate", tiny_lm.model_dir, "--prompt", "the garden", "--max-new-tokens", "0")
    assert status == 0 and out == "the garden\n", err
    with pytest.raises(ConfigError, match=r"max_new_tokens \(--max-new-tokens\) must be 0 or more, got -1"):
        tiny_lm.generate("the garden", max_new_tokens=-1)
    status, _, err = cli(capsys, "generate", tiny_lm.model_dir, "--prompt", "x", "--max-new-tokens", "-5")
    assert status == 2 and "--max-new-tokens" in err


def test_generation_stops_at_the_end_of_sequence_token(tiny_lm):
    """The stop token is the one the model's greedy path reaches last for the first time; tokens after it never come."""
    from modelyard.data.corpus import CorpusPreprocessor
    from modelyard.generation import LanguageModel

    prompt = tiny_lm.preprocessor.encode("a ")
    path = greedy(tiny_lm, prompt, 12)
    firsts = [i for i, t in enumerate(path[:-1]) if t not in path[:i]]
    stop_at = firsts[-1]
    stop = path[stop_at]
    assert list(sample_ids(tiny_lm.model, prompt, max_new_tokens=12, temperature=0, stop_id=stop)) == path[:stop_at + 1]
    # Through LanguageModel: with the model's end-of-text token at `stop`, the text ends just before it.
    pre = tiny_lm.preprocessor
    moved = CorpusPreprocessor(tokenizer=pre.tokenizer, block_size=pre.block_size, eos_id=stop)
    lm = LanguageModel(tiny_lm.model_dir, tiny_lm.model, tiny_lm.meta, moved)
    assert lm.complete("a ", max_new_tokens=12, temperature=0) == pre.decode(path[:stop_at])
    assert lm.complete("a ", max_new_tokens=12, temperature=0, stop_at_eos=False) == pre.decode(path)


@pytest.mark.parametrize("temperature", [1e-30, 1e-300, 5e-324, GREEDY_BELOW / 2])
def test_a_tiny_temperature_is_greedy_not_nan(tiny_lm, temperature):
    prompt = tiny_lm.preprocessor.encode("basil ")
    out = list(sample_ids(tiny_lm.model, prompt, max_new_tokens=8, temperature=temperature, top_k=5, seed=1))
    assert out == greedy(tiny_lm, prompt, 8)


def test_temperatures_that_are_not_numbers_are_refused(tiny_lm, capsys):
    at_threshold = list(sample_ids(tiny_lm.model, [1, 2], max_new_tokens=8, temperature=GREEDY_BELOW, seed=1))
    assert len(at_threshold) == 8  # the smallest sampled temperature divides without overflow
    for bad in (float("nan"), float("inf"), -0.5):
        with pytest.raises(ConfigError, match=r"temperature \(--temperature\) must be a finite number, 0 or more"):
            tiny_lm.generate("basil", temperature=bad)
    for bad in ("nan", "inf", "-1"):
        status, _, err = cli(capsys, "generate", tiny_lm.model_dir, "--prompt", "x", "--temperature", bad)
        assert status == 2 and "--temperature" in err and "Traceback" not in err


def test_seeds_run_from_0_to_2_to_the_64_minus_1(tiny_lm, capsys):
    kw = dict(max_new_tokens=10, temperature=1.0, top_k=None)
    assert tiny_lm.complete("the ", seed=MAX_SEED, **kw) == tiny_lm.complete("the ", seed=MAX_SEED, **kw)
    for bad in (MAX_SEED + 1, -1, 10**100):
        with pytest.raises(ConfigError, match=r"seed \(--seed\) must be from 0 to 2\*\*64-1"):
            tiny_lm.generate("the ", seed=bad)
    status, out, err = cli(capsys, "generate", tiny_lm.model_dir, "--prompt", "x", "--seed", str(2**65))
    assert status == 2 and out == "" and err.count("\n") == 1 and "--seed" in err and "2**64-1" in err


def test_bad_arguments_are_answered_before_the_model_is_loaded(tmp_path, capsys):
    """The run does not exist: the error is still about the argument, so it came first (no model load)."""
    status, _, err = cli(capsys, "generate", tmp_path / "no-run", "--prompt", "x", "--seed", str(2**64))
    assert status == 2 and "--seed" in err and "no-run" not in err


def test_a_prompt_that_is_not_utf8_is_refused(tiny_lm, capsys):
    # Python hands a command-line byte that is not UTF-8 to the program as a lone surrogate (U+DC80+byte).
    status, out, err = cli(capsys, "generate", tiny_lm.model_dir, "--prompt", "caf\udce9")
    assert status == 2 and out == ""
    assert "not valid UTF-8: byte 0xe9 at character 4" in err and "iconv" in err
    with pytest.raises(ConfigError, match="must be a str, got bytes"):
        tiny_lm.generate(b"cafe")
    # And for real: the bytes reach the process through argv, as from a latin-1 terminal.
    proc = subprocess.run([sys.executable, "-m", "modelyard", "generate", str(tiny_lm.model_dir), "--prompt",
                           b"caf\xe9"], capture_output=True, timeout=300)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2 and proc.stdout == b"" and "Traceback" not in err
    assert "not valid UTF-8: byte 0xe9 at character 4" in err
