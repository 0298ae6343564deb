import multiprocessing
import shutil

import pytest

from modelyard.store import artifacts, keys, models
from modelyard.store.db import SCHEMA_VERSION, RegistryError, connect
from tests.conftest import run_cli


@pytest.fixture(autouse=True)
def artifact_store(tmp_path, monkeypatch):
    """Each test's registrations copy into an artifact store of its own (spawned processes inherit it)."""
    monkeypatch.setenv("MODELYARD_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


def test_versions_promotion_and_lookup(url, digits_run):
    a = models.register(digits_run.path, "digits", url=url)
    b = models.register(digits_run.path, "digits", url=url)
    assert (a["version"], b["version"]) == (1, 2) and a["weights_sha256"] == b["weights_sha256"]
    assert a["metrics"]["test"]["accuracy"] == digits_run.metrics["test"]["accuracy"]
    assert models.show("digits", url=url)["version"] == 2  # no production version yet: the latest
    models.promote("digits:1", "production", url=url)
    assert models.show("digits", url=url)["version"] == 1
    models.promote("digits:2", "production", url=url)
    assert [v["stage"] for v in models.list_versions("digits", url=url)] == ["archived", "production"]
    with pytest.raises(RegistryError, match="no model 'nope'.*registered: digits"):
        models.show("nope", url=url)
    with pytest.raises(RegistryError, match="unknown stage"):
        models.promote("digits:1", "prod", url=url)
    with pytest.raises(RegistryError, match="must be a number"):
        models.show("digits:latest", url=url)


@pytest.mark.parametrize("ref", ["digits:abc", "digits:-1", "digits:", "digits:\u0661", "digits:" + "9" * 30])
def test_a_version_that_is_not_a_number_is_refused(ref):
    with pytest.raises(RegistryError, match="must be a number"):
        models.parse_ref(ref)


def test_changed_files_are_refused(url, digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run.path, run)
    rec = models.register(run, "m", url=url)
    weights = run / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")  # the run's files no longer matter: a copy is served
    assert models.resolve("m", url=url)[1]["version"] == 1
    stored = artifacts.folder(rec["artifact"]) / "model.safetensors"
    stored.write_bytes(stored.read_bytes()[:-1] + b"\x00")
    with pytest.raises(RegistryError, match="content hash mismatch"):
        models.resolve("m:1", url=url)


def _register_many(url, run, n):
    for _ in range(n):
        models.register(run, "race", url=url)


def test_two_processes_registering_at_once_get_distinct_versions(url, digits_run):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_register_many, args=(url, str(digits_run.path), 5)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    assert [v["version"] for v in models.list_versions("race", url=url)] == list(range(1, 11))


def _use(url, key_id, n):
    for _ in range(n):
        keys.add_usage(key_id, requests=1, predictions=3, compute_ms=0.5, url=url)


def test_keys_are_hashed_revocable_and_usage_from_two_writers_adds_up(url):
    rec, key = keys.create_key("acme", url=url)
    assert key.startswith("my_") and len(key) > 40 and keys.verify_key(key, url=url)["name"] == "acme"
    with connect(url).connect() as conn:
        stored = [tuple(r) for r in conn.exec_driver_sql("SELECT * FROM api_keys")]
    assert key not in str(stored)  # only its hash
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_use, args=(url, rec["id"], 20)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    row = keys.usage(url=url)[0]
    assert (row["requests"], row["predictions"], row["compute_ms"]) == (40, 120, pytest.approx(20.0))
    assert keys.revoke_key("acme", url=url) == 1
    assert keys.verify_key(key, url=url) is None and keys.verify_key("", url=url) is None
    with pytest.raises(RegistryError, match="no live key"):
        keys.revoke_key("acme", url=url)


def test_schema_is_versioned(url):
    engine = connect(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version FROM schema_version").scalar() == SCHEMA_VERSION
        conn.exec_driver_sql("UPDATE schema_version SET version = 99")
        conn.commit()
    from modelyard.store.db import migrate

    with pytest.raises(RegistryError, match="newer than this modelyard"):
        migrate(engine)


def test_cli_models_and_keys(tmp_path, digits_run):
    env = {"MODELYARD_HOME": str(tmp_path / "home")}
    assert "registered digits:1" in run_cli("models", "register", digits_run.path, "--name", "digits", env=env,
                                            check=True).stdout
    assert "digits:1 is now production" in run_cli("models", "promote", "digits:1", "--stage", "production",
                                                   env=env, check=True).stdout
    assert "production" in run_cli("models", "list", env=env, check=True).stdout
    out = run_cli("keys", "create", "--name", "c1", env=env, check=True).stdout.strip().splitlines()
    assert out[-1].startswith("my_") and out[-1] not in run_cli("keys", "usage", env=env, check=True).stdout
    bad = run_cli("models", "promote", "digits", "--stage", "production", env=env)
    assert bad.returncode == 2 and "NAME:VERSION" in bad.stderr
    bad = run_cli("models", "list", env={"MODELYARD_DB_URL": "postgresql://u:secret@127.0.0.1:1/x"})
    assert bad.returncode == 2 and "cannot open the model registry" in bad.stderr and "secret" not in bad.stderr
