"""HTTPS: the real server with a self-signed certificate, the CLI's checks of the files, the plain-HTTP warning."""

import datetime
import ipaddress
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import cli_in_process


def self_signed(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key; returns (certificate file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("tls"))


def trusting(cert_file) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert_file))


@pytest.fixture(scope="module")
def tls_server(image_run, certificate):
    """`modelyard serve --ssl-certfile --ssl-keyfile` in a subprocess; yields (base URL, process, log file)."""
    cert_file, key_file = certificate
    fd, log_name = tempfile.mkstemp(prefix="modelyard-tls-", suffix=".log")
    os.close(fd)
    log = Path(log_name)
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "modelyard", "serve", str(image_run.path), "--port", "0",
                                 "--ssl-certfile", str(cert_file), "--ssl-keyfile", str(key_file)],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        url = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"listening on (https?://[^\s]+:\d+)", log.read_text())
            if found:
                url = found[1]
                try:
                    if httpx.get(f"{url}/v2/health/ready", verify=trusting(cert_file), timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"the HTTPS server did not become ready: {log.read_text()}")
        yield url, proc, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.unlink(missing_ok=True)


def test_the_server_speaks_https_to_a_client_that_trusts_its_certificate(tls_server, certificate):
    url, _, _ = tls_server
    assert url.startswith("https://127.0.0.1:")
    r = httpx.get(f"{url}/v2/health/ready", verify=trusting(certificate[0]), timeout=5)
    assert r.status_code == 200 and r.url.scheme == "https"


def test_a_client_that_does_not_trust_the_certificate_refuses_it(tls_server):
    url, _, _ = tls_server
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/v2/health/ready", timeout=5)  # the system's CAs only


def test_plain_http_to_the_tls_port_fails_cleanly_and_the_server_keeps_serving(tls_server, certificate):
    url, proc, log = tls_server
    plain = url.replace("https://", "http://")
    try:
        r = httpx.get(f"{plain}/v2/health/ready", timeout=5)
    except httpx.TransportError:
        pass  # the server drops a connection that does not start with a TLS handshake
    else:
        assert r.status_code == 400, r.text
    assert proc.poll() is None
    assert httpx.get(f"{url}/v2/health/ready", verify=trusting(certificate[0]), timeout=5).status_code == 200
    assert "Traceback" not in log.read_text()


def _serve_cli(capsys, monkeypatch, run, *args):
    """`modelyard serve RUN ARGS` in this process with the server itself replaced: (exit status, stderr, the
    `tls` the server would have been started with)."""
    import modelyard.serving.app as app

    started = {}
    monkeypatch.setattr(app, "serve", lambda cfg, **kwargs: started.update(kwargs))
    code, _, err = cli_in_process(capsys, "serve", run.path, *args)
    return code, err, started.get("tls", "not started")


def test_bad_certificate_or_key_files_are_one_line_errors_before_the_server_starts(
        image_run, certificate, tmp_path, capsys, monkeypatch):
    from cryptography.hazmat.primitives import serialization

    cert_file, key_file = certificate
    _, other_key = self_signed(tmp_path, "other")
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (["--ssl-certfile", cert_file], "--ssl-certfile needs --ssl-keyfile"),
        (["--ssl-keyfile", key_file], "--ssl-keyfile needs --ssl-certfile"),
        (["--ssl-certfile", tmp_path / "missing.crt", "--ssl-keyfile", key_file], "missing.crt: cannot read it"),
        (["--ssl-certfile", cert_file, "--ssl-keyfile", tmp_path], "cannot read it"),  # a folder
        (["--ssl-certfile", garbage, "--ssl-keyfile", key_file], "holds no PEM certificate"),
        (["--ssl-certfile", key_file, "--ssl-keyfile", key_file], "holds no PEM certificate"),
        (["--ssl-certfile", cert_file, "--ssl-keyfile", garbage], "holds no PEM private key"),
        (["--ssl-certfile", cert_file, "--ssl-keyfile", other_key], "is not the private key of --ssl-certfile"),
        (["--ssl-certfile", cert_file, "--ssl-keyfile", encrypted], "is encrypted"),
    ]
    for args, message in cases:
        code, err, tls = _serve_cli(capsys, monkeypatch, image_run, *args)
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
        assert tls == "not started"
    code, err, tls = _serve_cli(capsys, monkeypatch, image_run, "--ssl-certfile", cert_file, "--ssl-keyfile",
                                key_file)
    assert code == 0, err
    assert tls == (str(cert_file.resolve()), str(key_file.resolve()))


def test_binding_beyond_loopback_without_tls_warns(image_run, certificate, capsys, monkeypatch):
    warning = "serves plain HTTP beyond this machine"
    for host in ("0.0.0.0", "::", "192.0.2.7", "example.org"):
        code, err, tls = _serve_cli(capsys, monkeypatch, image_run, "--host", host)
        assert code == 0 and tls is None, err
        [line] = [line for line in err.splitlines() if warning in line]
        assert f"--host {host} " in line and "--ssl-certfile CERT --ssl-keyfile KEY" in line
    for host in ("127.0.0.1", "127.0.1.1", "localhost", "::1"):
        code, err, _ = _serve_cli(capsys, monkeypatch, image_run, "--host", host)
        assert code == 0 and warning not in err, (host, err)
    code, err, tls = _serve_cli(capsys, monkeypatch, image_run, "--host", "0.0.0.0", "--ssl-certfile",
                                certificate[0], "--ssl-keyfile", certificate[1])
    assert code == 0 and tls is not None and warning not in err, err
