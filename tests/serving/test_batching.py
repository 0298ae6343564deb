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
