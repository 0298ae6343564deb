"""A language model served for real: streamed text, a client that drops its stream, graceful shutdown.

One server for the module; the shutdown test stops it, so it comes last. The model is trained on documents of
twenty sentences each, so it rarely ends a generation early: a dropped or interrupted generation has a long way
to go.
"""

from itertools import islice

import httpx
import pandas as pd
import pytest

import modelyard
from tests.conftest import tiny_config
from tests.serving.conftest import Server
from tests.serving.helpers import auth, fresh_key, usage_of, wait_for

PROMPT = "the garden"


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    from modelyard.data.synthetic import write_text_csv

    folder = tmp_path_factory.mktemp("lm")
    sentences = list(pd.read_csv(write_text_csv(folder / "t.csv", per_class=80, seed=3))["description"])
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(" ".join(sentences[i:i + 20]) for i in range(0, len(sentences), 20)) + "\n")
    cfg = tiny_config(name="lm", data={"source": f"text:{corpus}", "block_size": 16,
                                       "tokenizer": {"vocab_size": 120}}, train={"epochs": 1, "batch_size": 16})
    cfg["model"] = {"name": "gpt", "d_model": 16, "n_layers": 1, "n_heads": 2}
    return modelyard.train(cfg, output=folder / "runs", quiet=True)


@pytest.fixture(scope="module")
def lm(lm_run):
    return modelyard.load(lm_run.path)


@pytest.fixture(scope="module")
def lm_server(lm_run, registry_home):
    server = Server(lm_run.path, "--name", "lm")
    yield server
    server.stop()


def generate_url(server):
    return f"{server.url}/v1/models/lm/generate"


def test_language_model_streams_generated_text(lm_server, lm, api_key):
    body = {"prompt": PROMPT, "max_new_tokens": 12, "seed": 3}
    with httpx.stream("POST", generate_url(lm_server), json=body, headers=auth(api_key)) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    assert text == lm.complete(PROMPT, max_new_tokens=12, seed=3)
    r = httpx.post(f"{lm_server.url}/v1/models/lm/predict", json={"texts": ["x"]}, headers=auth(api_key))
    assert r.status_code == 400 and "generate" in r.json()["error"]
    r = httpx.post(generate_url(lm_server), json={"prompt": ""}, headers=auth(api_key))
    assert r.status_code == 422
    r = httpx.post(generate_url(lm_server), content=b'{"prompt": "a\\ud800"}',
                   headers={"Content-Type": "application/json", **auth(api_key)})
    assert r.status_code == 422 and "prompt" in r.json()["error"] and "unicode" in r.json()["error"]
    v2 = {"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": [PROMPT]}]}
    r = httpx.post(f"{lm_server.url}/v2/models/lm/infer", json=v2, headers=auth(api_key))
    assert r.status_code == 200 and isinstance(r.json()["outputs"][0]["data"][0], str)
    v2["inputs"][0]["data"] = ["a" * 20_001]  # v1's bound on a prompt holds on v2 too
    r = httpx.post(f"{lm_server.url}/v2/models/lm/infer", json=v2, headers=auth(api_key))
    assert r.status_code == 413 and "20,000" in r.json()["error"]


def test_a_client_that_drops_its_stream_frees_the_model(lm_server, lm, registry_home):
    """Dropped after one piece, the generation is cancelled (and billed for the pieces generated) and the next
    generation runs at once; a dropped stream used to keep the model's lock for good."""
    long = {"prompt": PROMPT, "max_new_tokens": 2048, "seed": 4}
    assert len(list(islice(lm.generate(PROMPT, max_new_tokens=2048, seed=4), 100))) == 100  # not over by then
    key, prefix = fresh_key("dropper")
    with httpx.stream("POST", generate_url(lm_server), json=long, headers=auth(key)) as r:
        assert r.status_code == 200
        next(r.iter_text())
    body = {"prompt": PROMPT, "max_new_tokens": 12, "seed": 3}
    r = httpx.post(generate_url(lm_server), json=body, headers=auth(key), timeout=30)
    assert r.status_code == 200 and r.text == lm.complete(PROMPT, max_new_tokens=12, seed=3)
    usage = wait_for(lambda: (row := usage_of(prefix))["requests"] == 2 and row, what="both requests metered")
    billed_for_dropped = usage["predictions"] - len(list(lm.generate(PROMPT, max_new_tokens=12, seed=3)))
    assert 1 <= billed_for_dropped < 100, usage


def test_a_generation_under_way_at_sigterm_finishes(lm_server, lm, api_key):
    long = {"prompt": PROMPT, "max_new_tokens": 300, "seed": 4}
    full = list(lm.generate(PROMPT, max_new_tokens=300, seed=4))
    assert len(full) > 200
    pieces, running_after_sigterm = [], []
    with httpx.stream("POST", generate_url(lm_server), json=long, headers=auth(api_key)) as r:
        for i, piece in enumerate(r.iter_text()):
            if i == 0:
                lm_server.proc.terminate()
            elif i == 1:
                running_after_sigterm.append(lm_server.proc.poll() is None)
            pieces.append(piece)
    assert running_after_sigterm == [True]  # SIGTERM arrived with most of the generation still to come
    assert "".join(pieces) == "".join(full)
    assert lm_server.proc.wait(30) in (0, -15)  # uvicorn re-raises SIGTERM once it has shut down cleanly
