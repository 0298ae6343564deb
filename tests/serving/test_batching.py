import asyncio

import numpy as np
import torch

import modelyard
from modelyard.serving.batching import Batcher


def test_batched_answers_equal_one_by_one(digits_run):
    from sklearn.datasets import load_digits

    model = modelyard.load(digits_run.path)
    images = load_digits().images[:40]
    alone = [model.predict_proba(images[i:i + 1]) for i in range(40)]
    sizes = []

    async def main():
        batcher = Batcher(model.proba_of, max_batch_size=16, max_wait_ms=50, on_batch=sizes.append)
        batcher.start()
        # Requests of 1 and 2 items arriving together.
        parts = [images[i:i + 1] for i in range(20)] + [images[i:i + 2] for i in range(20, 40, 2)]
        results = await asyncio.gather(*(batcher.submit(model.transform(p), len(p)) for p in parts))
        await batcher.stop()
        return parts, results

    parts, results = asyncio.run(main())
    got = np.concatenate([prob for prob, _ in results])
    assert np.allclose(got, np.concatenate(alone), atol=1e-6)
    assert max(sizes) > 1 and max(sizes) <= 16 and sum(sizes) == 40


def test_batching_off_runs_one_request_per_pass(digits_run):
    model = modelyard.load(digits_run.path)
    sizes = []

    async def main():
        batcher = Batcher(model.proba_of, max_batch_size=1, max_wait_ms=5, on_batch=sizes.append)
        batcher.start()
        await asyncio.gather(*(batcher.submit(torch.zeros(1, 1, 8, 8), 1) for _ in range(6)))
        await batcher.stop()

    asyncio.run(main())
    assert sizes == [1] * 6


def test_the_batcher_survives_any_exception_and_fails_only_the_bad_request():
    """A batch that raises (in the model, or in the batcher's own bookkeeping) fails only the request at fault;
    requests batched with it are answered, and so is every later request."""
    import pytest

    from modelyard.serving.batching import BatcherStopped

    def forward(x):  # (N, 1) -> (N, 2); a negative value breaks the model
        if (x < 0).any():
            raise ZeroDivisionError("a model that divides by zero")
        return np.tile(x.numpy(), (1, 2))

    broken_once = []

    def on_batch(n):
        if not broken_once:
            broken_once.append(n)
            raise RuntimeError("bookkeeping failed")

    async def main():
        batcher = Batcher(forward, max_batch_size=8, max_wait_ms=50, on_batch=on_batch)
        with pytest.raises(BatcherStopped):  # not started: fails at once instead of waiting forever
            await batcher.submit(torch.ones(1, 1), 1)
        batcher.start()
        with pytest.raises(RuntimeError, match="bookkeeping"):
            await batcher.submit(torch.ones(1, 1), 1)
        together = await asyncio.gather(batcher.submit(torch.ones(1, 1), 1),
                                        batcher.submit(torch.full((1, 1), -1.0), 1),
                                        batcher.submit(torch.full((2, 1), 2.0), 2), return_exceptions=True)
        with pytest.raises(ValueError, match="at least one item"):
            await batcher.submit(torch.ones(0, 1), 0)
        later = await batcher.submit(torch.full((3, 1), 3.0), 3)
        running = batcher.running
        await batcher.stop()
        return together, later, running

    together, later, running = asyncio.run(main())
    assert together[0][0].tolist() == [[1.0, 1.0]] and together[2][0].tolist() == [[2.0, 2.0]] * 2
    assert isinstance(together[1], ZeroDivisionError)
    assert later[0].tolist() == [[3.0, 3.0]] * 3 and running


def test_not_ready_and_503_when_the_batcher_is_not_running(digits_run):
    from fastapi.testclient import TestClient

    from modelyard.serving.app import ServerConfig, create_app

    app = create_app(ServerConfig(model=str(digits_run.path), name="digits", auth=False))
    body = {"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]}
    with TestClient(app) as client:
        assert client.get("/v2/health/ready").status_code == 200
        assert client.post("/v2/models/digits/infer", json=body).status_code == 200
        client.portal.call(_cancel, app.state.served.batcher.task)
        r = client.get("/v2/health/ready")
        assert r.status_code == 503 and "batcher" in r.json()["error"]
        r = client.post("/v2/models/digits/infer", json=body)
        assert r.status_code == 503 and "not ready" in r.json()["error"]


async def _cancel(task):
    task.cancel()
    await asyncio.wait({task})
