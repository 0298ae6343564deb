"""`modelyard serve`: serve a run or a registered model over HTTP or HTTPS."""

from __future__ import annotations

import click


@click.command()
@click.argument("model", metavar="MODEL")
@click.option("--name", help="The model's name in URLs (default: its registry name, else the experiment name).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; 0.0.0.0 exposes the server.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port; the line `listening on http://HOST:PORT` on stderr says which.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server processes, each with its own copy of the model; /metrics sums their counters.")
@click.option("--max-batch-size", default=32, show_default=True, type=click.IntRange(1, 4096),
              help="Items per forward pass; 1 turns dynamic batching off.")
@click.option("--max-wait-ms", default=5.0, show_default=True, type=click.FloatRange(0, 1000),
              help="How long the first request of a batch waits for others.")
@click.option("--max-body-mb", default=4.0, show_default=True, type=click.FloatRange(0.001, 1024),
              help="Larger request bodies get 413.")
@click.option("--max-items", default=1024, show_default=True, type=click.IntRange(1, 1_000_000),
              help="Most items in one request.")
@click.option("--runtime", type=click.Choice(["auto", "onnx"]), default="auto", show_default=True,
              help="auto: what the model folder holds; onnx: a torch or hf model is exported to ONNX once (kept "
                   "in MODELYARD_HOME/onnx-cache) and served by ONNX Runtime.")
@click.option("--explain-max-instances", default=4, show_default=True, type=click.IntRange(1, 10_000),
              help="Most inputs in one explanation request (each costs many forward passes).")
@click.option("--explain-max-body-mb", default=1.0, show_default=True, type=click.FloatRange(0.001, 1024),
              help="Larger explanation request bodies get 413.")
@click.option("--explain-concurrency", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Explanations run at once per worker, each on a copy of the model; more get 503 at once.")
@click.option("--explain-timeout-s", default=60.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="An explanation running longer is stopped and answered 504.")
@click.option("--ssl-certfile", metavar="PEM",
              help="Serve HTTPS with this certificate (chain); needs --ssl-keyfile.")
@click.option("--ssl-keyfile", metavar="PEM", help="The certificate's private key (unencrypted PEM).")
@click.option("--no-auth", is_flag=True, help="Serve without API keys (local experiments only).")
@click.option("--no-access-log", is_flag=True,
              help="Write no line per request (time, client name, route, status, latency) to stderr.")
def serve(model: str, name: str | None, host: str, port: int, workers: int, max_batch_size: int,
          max_wait_ms: float, max_body_mb: float, max_items: int, runtime: str, explain_max_instances: int,
          explain_max_body_mb: float, explain_concurrency: int, explain_timeout_s: float, ssl_certfile: str | None,
          ssl_keyfile: str | None, no_auth: bool, no_access_log: bool) -> None:
    """Serve MODEL over HTTP, or HTTPS with --ssl-certfile and --ssl-keyfile: NAME (its production version, else
    the latest) or NAME:VERSION from the registry, or a run directory written as a path (./digits,
    runs/digits-...; a bare name always means the registry)."""
    from modelyard.serving.app import ServerConfig, serve as run_server

    if name is not None:
        check_served_name(name)
    tls = check_tls_files(ssl_certfile, ssl_keyfile)
    shown = check_model_argument(model)
    if not tls and not is_loopback(host):
        click.echo(f"warning: --host {host} serves plain HTTP beyond this machine, so API keys and data cross the "
                   "network unencrypted; pass --ssl-certfile CERT --ssl-keyfile KEY to serve HTTPS", err=True)
    if no_auth:
        click.echo("warning: --no-auth: anyone who can reach this port can use the model", err=True)
    cfg = ServerConfig(model=model, name=name, auth=not no_auth, max_batch_size=max_batch_size,
                       max_wait_ms=max_wait_ms, max_body_bytes=int(max_body_mb * 2**20), max_items=max_items,
                       access_log=not no_access_log, runtime=runtime, explain_max_instances=explain_max_instances,
                       explain_max_body_bytes=int(explain_max_body_mb * 2**20),
                       explain_concurrency=explain_concurrency, explain_timeout_s=explain_timeout_s)
    # prints the URL once the port is bound
    run_server(cfg, host=host, port=port, workers=workers, serving=shown, tls=tls)


def check_served_name(name: str) -> None:
    """The name is one segment of every model URL (/v2/models/NAME/infer): one that is empty, holds a '/' or a
    control character, is '.' or '..', or is the statistics route's `stats` could never be reached."""
    from modelyard.errors import ConfigError

    if (not name or "/" in name or name in (".", "..", "stats")
            or any(ord(c) < 32 or ord(c) == 127 for c in name)):
        raise ConfigError(f"--name {name!r} cannot be used in URLs (/v2/models/NAME/infer): give a name without '/' "
                          "or control characters, other than '.', '..' and 'stats' (letters, digits, '.', '_' "
                          "and '-' are always safe)")


def check_tls_files(certfile: str | None, keyfile: str | None) -> tuple[str, str] | None:
    """Both files or neither; each readable, the certificate PEM, the key PEM, unencrypted and the certificate's.

    Returns their absolute paths (workers load them again), or None for plain HTTP. uvicorn would find the same
    faults only once the server starts, as a traceback (and would prompt on the terminal for an encrypted key).
    """
    import ssl
    from pathlib import Path

    from modelyard.errors import ConfigError

    if (certfile is None) != (keyfile is None):
        given, missing = ("--ssl-certfile", "--ssl-keyfile") if keyfile is None else ("--ssl-keyfile",
                                                                                     "--ssl-certfile")
        raise ConfigError(f"{given} needs {missing} too: pass the certificate and its private key to serve HTTPS, "
                          "or neither to serve HTTP")
    if certfile is None:
        return None
    for option, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        try:
            Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{option} {path}: cannot read it ({exc.strerror or exc}); pass a readable PEM file"
                              ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=certfile)
    except ssl.SSLError:
        raise ConfigError(f"--ssl-certfile {certfile} holds no PEM certificate (-----BEGIN CERTIFICATE-----); pass "
                          "the server's certificate, followed by any intermediate ones") from None

    class _Encrypted(Exception):
        pass

    def no_password():
        raise _Encrypted

    try:
        context.load_cert_chain(certfile, keyfile, password=no_password)
    except _Encrypted:
        raise ConfigError(f"--ssl-keyfile {keyfile} is encrypted; pass an unencrypted key (`openssl pkey -in "
                          f"{keyfile} -out KEY.pem`), readable only by the server's account") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"--ssl-keyfile {keyfile} is not the private key of --ssl-certfile {certfile}; pass "
                              "the key the certificate was issued for") from None
        raise ConfigError(f"--ssl-keyfile {keyfile} holds no PEM private key ({exc.reason or exc}); pass the "
                          "certificate's private key (-----BEGIN PRIVATE KEY-----)") from None
    return str(Path(certfile).resolve()), str(Path(keyfile).resolve())


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach HOST: localhost, 127.0.0.0/8, ::1."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_model_argument(model: str) -> str:
    """Check everything about MODEL that can be checked before the server starts, and say what will be served.

    A path must hold a sound model folder; a registry name must have a version whose stored files are present and
    still hash to what was registered.
    """
    from pathlib import Path

    from modelyard.artifact import check_model_folder
    from modelyard.errors import ConfigError
    from modelyard.store.models import is_path, resolve

    if is_path(model):
        if not Path(model).exists():
            raise ConfigError(f"{model} not found; pass a run directory that `modelyard train` printed, or "
                              "NAME[:VERSION] of a model added with `modelyard models register`")
        check_model_folder(model)
        return model
    model_dir, record = resolve(model)
    check_model_folder(model_dir)
    if not record.get("artifact"):
        click.echo(f"warning: {record['name']}:{record['version']} was registered before modelyard kept a copy of "
                   "each version; it is served from its run folder. Register the run again to keep a copy",
                   err=True)
    return f"{record['name']}:{record['version']} (sha256 {record['weights_sha256'][:12]}, from {model_dir})"
