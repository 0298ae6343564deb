import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

import modelyard
from tests.conftest import run_cli, tiny_config


@pytest.fixture(scope="session")
def registry_home(tmp_path_factory):
    """A registry of its own for the serving tests (MODELYARD_HOME), shared with the servers they start."""
    home = tmp_path_factory.mktemp("home")
    os.environ["MODELYARD_HOME"] = str(home)
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`modelyard serve` in a subprocess on a port it picks itself (--port 0, so parallel tests never race for
    one); its stderr (warnings, the access log) goes to a file that `log()` reads."""

    def __init__(self, model, *args, env=None):
        fd, name = tempfile.mkstemp(prefix="modelyard-server-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        with open(self.log_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "modelyard", "serve", str(model), "--port", "0",
                                          *map(str, args)], stdout=subprocess.DEVNULL, stderr=err, text=True,
                                         env={**os.environ, **(env or {})})
        self.url = None
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log()}")
            if self.url is None:
                found = re.search(r"listening on (http://[^\s]+):(\d+)", self.log())
                if found:
                    self.url, self.port = f"{found[1]}:{found[2]}", int(found[2])
            if self.url is not None:
                try:
                    if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"server did not become ready in 120 s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None and httpx.get(f"{self.url}/v2/health/live").status_code == 200

    def stop(self) -> str:
        """Stop the server (SIGTERM, then SIGKILL after 30 s); returns its stderr."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        err = self.log()
        self.log_path.unlink(missing_ok=True)
        return err


@pytest.fixture(scope="session")
def api_key(registry_home):
    return run_cli("keys", "create", "--name", "tests", check=True).stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def image_run(tmp_path_factory):
    return modelyard.train(tiny_config(name="digits"), output=tmp_path_factory.mktemp("runs"), quiet=True)


@pytest.fixture(scope="session")
def text_run(tmp_path_factory, topics_csv):
    cfg = tiny_config(name="topics", data={"source": f"csv:{topics_csv}", "text": "description", "target": "topic",
                                           "tokenizer": {"vocab_size": 200, "max_length": 16}})
    cfg["model"] = {"name": "text-transformer", "d_model": 16, "n_layers": 1, "n_heads": 2}
    return modelyard.train(cfg, output=tmp_path_factory.mktemp("runs"), quiet=True)


@pytest.fixture(scope="session")
def image_server(image_run, api_key):
    server = Server(image_run.path, "--name", "digits")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def text_server(text_run, api_key):
    server = Server(text_run.path, "--name", "topics", "--max-body-mb", "0.01", "--max-items", "50",
                    "--no-access-log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A throwaway PostgreSQL cluster on loopback (`make test` installs Debian's postgresql when it is missing)."""
    import glob
    import shutil as sh

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        pytest.fail("PostgreSQL is not installed: run `make test`, which installs Debian's postgresql package")
    bindir = bins[-1]
    import tempfile
    from pathlib import Path

    base = Path(tempfile.mkdtemp(prefix="modelyard-pg-"))  # not under pytest's tmp: that is private to root
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root: use the postgres account
        as_user = ["runuser", "-u", "postgres", "--"]
        base.chmod(0o777)
        sock.chmod(0o777)
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    run(f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    run(f"{bindir}/pg_ctl", "-D", str(data), "-w", "-l", str(base / "log"), "-o",
        f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    yield f"postgresql://postgres@127.0.0.1:{port}"
    run(f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop")
    sh.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    """Every registry test runs on SQLite and on a real PostgreSQL server, each in a fresh database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    import uuid

    import psycopg

    server = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"
