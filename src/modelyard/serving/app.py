"""The inference server: FastAPI on uvicorn, speaking the Open Inference Protocol (KServe v2) and a v1 JSON API.

Safe by default: API keys are required (`Authorization: Bearer KEY`) and checked before anything else of a request
is read, bodies are capped, a bad request gets a 4xx saying what was wrong and never takes the server down.
Usage is metered per key into the registry; every request gets one access-log line.

The parts, each readable alone: `auth` (keys), `limits` (each key's rate and quota), `middleware` (body limits,
metrics, access log), `routes_v1`, `routes_v2`, `context` (the served model), `batching`, `generation`, `usage`,
`errors`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from modelyard.serving import metrics, routes_explain, routes_v1, routes_v2
from modelyard.serving.auth import AuthMiddleware, KeyChecker
from modelyard.serving.context import Served
from modelyard.serving.errors import install_error_handlers
from modelyard.serving.limits import RateLimits
from modelyard.serving.middleware import BodyLimits, RequestLog

ENV_CONFIG = "MODELYARD_SERVE_CONFIG"
log = logging.getLogger("modelyard.serving")


@dataclass
class ServerConfig:
    model: str  # a run directory, or NAME / NAME:VERSION in the registry
    name: str | None = None
    auth: bool = True
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_body_bytes: int = 4 * 2**20
    max_items: int = 1024
    db_url: str | None = None
    access_log: bool = True
    runtime: str = "auto"  # "onnx": a torch or hf model is exported to ONNX and served by ONNX Runtime
    # POST /v1/models/NAME/explain costs many forward passes per input: limits of its own (routes_explain)
    explain_max_instances: int = 4
    explain_max_body_bytes: int = 2**20
    explain_concurrency: int = 1  # per server process; each slot holds a copy of the model
    explain_timeout_s: float = 60.0


def create_app(cfg: ServerConfig) -> FastAPI:
    """The server for one model. Loads it now, so a bad MODEL fails before the port opens."""
    served = Served.load(cfg)
    app = _fastapi(title="modelyard inference server", version="1", lifespan=served.lifespan,
                   description=f"Serves model {served.name!r} (version {served.version}) over the Open Inference "
                               "Protocol (KServe v2) and a v1 JSON API. Authenticate with "
                               "`Authorization: Bearer KEY`.")
    install_error_handlers(app)
    routers = [routes_v2.router(served), routes_v1.router(served), routes_explain.router(served, cfg),
               metrics.router(served)]
    for router in routers:
        app.include_router(router)
    # The last added runs first: log and count every request, then authenticate, then the key's rate, then read
    # the body.
    app.add_middleware(BodyLimits, max_body_bytes=cfg.max_body_bytes, tighter=routes_explain.body_cap(cfg))
    app.add_middleware(RateLimits, limiter=served.limiter)
    app.add_middleware(AuthMiddleware, checker=KeyChecker(cfg.db_url) if cfg.auth else None,
                       on_failure=served.metrics.auth_failures.inc)
    routes = [route for router in (app.router, *routers) for route in router.routes]
    app.add_middleware(RequestLog, metrics=served.metrics, routes=routes, access=cfg.access_log,
                       queue_depth=(lambda: served.batcher.depth) if served.batcher else None)
    app.state.model_name, app.state.config, app.state.served = served.name, cfg, served
    return app


def _fastapi(**kwargs) -> FastAPI:
    """FastAPI whose /docs and /redoc load their scripts from this server (a CDN is out of reach offline)."""
    try:
        from fastapi_offline import FastAPIOffline
    except ImportError:  # pragma: no cover  (a dependency of modelyard; without it the docs need the internet)
        log.warning("fastapi-offline is not installed: /docs loads Swagger UI from a CDN")
        return FastAPI(**kwargs)
    return FastAPIOffline(**kwargs)


def log_to_stderr(access_log: bool) -> None:
    """The server's own log lines on stderr: warnings, and one line per request unless `access_log` is off."""
    for name, level in (("modelyard.serving", logging.INFO), ("modelyard.access", logging.INFO)):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s" if name == "modelyard.access" else
                                                   "%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
        logger.setLevel(level if name != "modelyard.access" or access_log else logging.WARNING)
        logger.propagate = False


def app_from_env() -> FastAPI:
    """For `uvicorn --factory` with several workers: the config travels in MODELYARD_SERVE_CONFIG."""
    cfg = ServerConfig(**json.loads(os.environ[ENV_CONFIG]))
    log_to_stderr(cfg.access_log)
    return create_app(cfg)


def serve(cfg: ServerConfig, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          serving: str | None = None, tls: tuple[str, str] | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C; HTTPS when `tls` gives (certificate file, key file).

    Loads the model first (a bad MODEL fails before the port opens), binds the socket, then prints `serving`
    (what is served, when given) and `listening on http(s)://HOST:PORT` on stderr: port 0 picks a free port, and
    that line says which. Several workers share the socket and sum their metrics (see `metrics`).
    """
    import uvicorn

    from modelyard.errors import ConfigError

    log_to_stderr(cfg.access_log)
    app = create_app(cfg)  # fail here, with a clear message, before any worker starts
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
                             "(0 picks a free one) or --host") from None
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"{'https' if tls else 'http'}://{shown}:{sock.getsockname()[1]}"
    if serving:
        print(f"serving {serving}", file=sys.stderr)
    print(f"listening on {url} (docs: {url}/docs)", file=sys.stderr, flush=True)
    common = dict(timeout_graceful_shutdown=30, access_log=False, log_level="warning")
    if tls:
        common.update(ssl_certfile=tls[0], ssl_keyfile=tls[1])
    if workers == 1:
        uvicorn.Server(uvicorn.Config(app, **common)).run(sockets=[sock])
        return
    # Every worker, and every worker that replaces one, loads the version loaded here: `serve NAME` means the
    # production (else latest) version, which may change while the server runs.
    cfg = replace(cfg, model=app.state.served.source)
    del app
    os.environ[ENV_CONFIG] = json.dumps(asdict(cfg))
    config = uvicorn.Config("modelyard.serving.app:app_from_env", factory=True, workers=workers, **common)
    with _metrics_folder() as folder:
        _Supervisor(config, sockets=[sock], metrics_dir=folder).run()


@contextmanager
def _metrics_folder():
    """A fresh PROMETHEUS_MULTIPROC_DIR for the workers of this start (they are spawned, so they import
    prometheus_client after it is set), removed when they have stopped. One left by an earlier start or by the
    environment would add its counts to this server's."""
    folder = tempfile.mkdtemp(prefix="modelyard-metrics-")
    before = os.environ.get(metrics.MULTIPROC_ENV)
    os.environ[metrics.MULTIPROC_ENV] = folder
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop(metrics.MULTIPROC_ENV, None)
        else:
            os.environ[metrics.MULTIPROC_ENV] = before
        shutil.rmtree(folder, ignore_errors=True)


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, which also drops the live gauges of every worker that is gone (died and
    replaced, restarted by SIGHUP, retired by SIGTTOU), as prometheus_client's multiprocess mode asks."""

    def __init__(self, config, sockets, metrics_dir: str) -> None:
        super().__init__(config, sockets)
        self.metrics_dir = metrics_dir

    def keep_subprocess_alive(self) -> None:
        self._forgetting_the_gone(super().keep_subprocess_alive)

    def handle_signals(self) -> None:
        self._forgetting_the_gone(super().handle_signals)

    def _forgetting_the_gone(self, step) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        before = {p.pid for p in self.processes}
        try:
            step()
        finally:
            for pid in before - {p.pid for p in self.processes}:
                mark_process_dead(pid, self.metrics_dir)
