"""What every route reads: the loaded model, its name and version, the batcher, the usage meter and the metrics."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modelyard.errors import ModelyardError
from modelyard.serving.batching import Batcher, BatcherStopped
from modelyard.serving.generation import ExclusiveModel
from modelyard.serving.limits import Limiter
from modelyard.serving.metrics import ServerMetrics
from modelyard.serving.protocol import BadRequest
from modelyard.serving.usage import UsageMeter

log = logging.getLogger("modelyard.serving")


@dataclass
class Served:
    model: Any  # a Predictor (classifiers) or a LanguageModel
    name: str
    version: str
    max_items: int
    metrics: ServerMetrics
    usage: UsageMeter
    batcher: Batcher | None  # classifiers
    lm: ExclusiveModel | None  # language models
    limiter: Limiter  # each key's rate and monthly quota
    source: str = ""  # what was loaded: NAME:VERSION from the registry (pinned), or the run directory

    @classmethod
    def load(cls, cfg) -> "Served":
        """Resolve and load `cfg.model` now, so a bad MODEL fails before the port opens."""
        from modelyard.artifact import load
        from modelyard.store.models import resolve

        run_path, record = resolve(cfg.model, url=cfg.db_url)
        model = load(run_path)
        if cfg.runtime == "onnx" and getattr(model, "family", None) != "onnx":
            model = _onnx_copy(model)
        metrics = ServerMetrics()
        is_lm = model.task == "lm"
        return cls(model=model, name=cfg.name or (record["name"] if record else model.name),
                   version=str(record["version"]) if record else "1", max_items=cfg.max_items, metrics=metrics,
                   usage=UsageMeter(cfg.db_url, on_failure=metrics.usage_flush_failures.inc),
                   batcher=None if is_lm else Batcher(model.proba_of, max_batch_size=cfg.max_batch_size,
                                                      max_wait_ms=cfg.max_wait_ms,
                                                      on_batch=metrics.batch_size.observe),
                   lm=ExclusiveModel(model) if is_lm else None,
                   limiter=Limiter(cfg.db_url, on_refused=lambda reason: metrics.rate_limited.labels(reason).inc()),
                   source=f"{record['name']}:{record['version']}" if record else cfg.model)

    @property
    def pre(self):
        return self.model.preprocessor

    @property
    def ready(self) -> bool:
        return self.batcher is None or self.batcher.running

    def check_name(self, model_name: str) -> None:
        if model_name != self.name:
            raise BadRequest(f"unknown model {model_name!r}; this server serves {self.name!r}", status=404)

    @asynccontextmanager
    async def lifespan(self, app):
        if self.batcher:
            self.batcher.start()
        flusher = asyncio.get_running_loop().create_task(self.usage.run())
        yield
        flusher.cancel()
        await self.usage.close()
        if self.batcher:
            await self.batcher.stop()

    async def predict(self, x, n: int, key: dict | None) -> np.ndarray:
        """Probabilities (n, C) for raw inputs, through the batcher; metered to `key`, within its monthly quota."""
        async with self.limiter.quota(key, n):  # 429 before the model runs if the quota cannot cover n more
            return await self._predict(x, n, key)

    async def _predict(self, x, n: int, key: dict | None) -> np.ndarray:
        t = await asyncio.to_thread(self._transform, x)
        try:
            prob, ms = await self.batcher.submit(t, n)
        except BatcherStopped:
            raise BadRequest("the server is not ready (its batcher is not running); retry on another server",
                             status=503) from None
        if not np.isfinite(prob).all():
            raise RuntimeError("the model answered non-finite probabilities")
        if key:
            self.usage.add(key["id"], n, ms)
        return prob

    def _transform(self, x):
        try:
            t = self.model.transform(x)
        except ModelyardError:
            raise
        except Exception as exc:  # noqa: BLE001  (the input passed the checks but the preprocessor refuses it)
            log.warning("preprocessing refused a request's input", exc_info=True)
            raise BadRequest(f"the input cannot be preprocessed for this model ({exc.__class__.__name__}: "
                             f"{str(exc)[:200]})") from None
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
            raise BadRequest("the input holds values out of range once preprocessed (scaled by the training "
                             "data's statistics, some are no longer finite numbers); send values in the "
                             "training data's units")
        return t


def _onnx_copy(model):
    """The model exported to ONNX (once; later starts reuse the copy), loaded to run on ONNX Runtime."""
    from modelyard.artifact import load
    from modelyard.compress.export import serving_copy

    folder = serving_copy(model)
    log.info("serving through ONNX Runtime: the model of %s, exported to %s", model.model_dir, folder)
    return load(folder)
