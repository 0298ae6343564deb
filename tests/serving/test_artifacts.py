"""A registered version is a checked copy of the model, kept by content in the artifact store, and a bare name
always means the registry (issue 13, items 6-8). Registry work runs in this process; one real server shows that
a version is served after its run folder is gone, with a same-named folder beside it."""

import json
import os
import shutil

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text

import modelyard
from modelyard.store import artifacts, models
from modelyard.store.db import MIGRATIONS, RegistryError
from tests.conftest import tiny_config
from tests.serving.conftest import Server


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A registry of this test's own; the artifact store in its default place, MODELYARD_HOME/artifacts."""
    monkeypatch.setenv("MODELYARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELYARD_ARTIFACTS", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory, wine_csv):
    return modelyard.train(tiny_config(name="wine", data={"source": f"csv:{wine_csv}", "target": "cultivar"}),
                           output=tmp_path_factory.mktemp("runs"), quiet=True)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory, corpus_txt):
    cfg = tiny_config(name="lm", data={"source": f"text:{corpus_txt}", "block_size": 16,
                                       "tokenizer": {"vocab_size": 120}}, train={"epochs": 1, "batch_size": 16})
    cfg["model"] = {"name": "gpt", "d_model": 16, "n_layers": 1, "n_heads": 2}
    return modelyard.train(cfg, output=tmp_path_factory.mktemp("lm"), quiet=True)


def copy_run(run, dest):
    shutil.copytree(run.path, dest)
    return dest


def stored(home):
    """The content addresses in the default artifact store."""
    folder = home / "artifacts" / "sha256"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def flip_last_byte(path):
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))


def cli(argv, capsys, monkeypatch):
    """`modelyard ARGV` in this process, the server never started: (exit status, stdout, stderr)."""
    import uvicorn

    from modelyard.cli import main

    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("the server started"))
    try:
        main(list(map(str, argv)))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- 6: a bare name means the registry


@pytest.mark.parametrize("model, is_path", [("digits", False), ("digits:2", False), ("./digits", True),
                                            ("runs/digits-1", True), (".digits", True), ("/srv/runs/x", True)])
def test_a_path_is_a_path_only_when_written_as_one(model, is_path):
    assert models.is_path(model) is is_path


def test_a_folder_named_like_a_registered_model_does_not_stand_in_for_it(digits_run, text_run, tmp_path):
    rec = models.register(digits_run.path, "digits")
    decoy = copy_run(text_run, tmp_path / "digits")  # another model, in the working directory, under the same name
    for ref in ("digits", "digits:1"):
        path, record = models.resolve(ref)
        assert path == artifacts.folder(rec["artifact"]) and record["version"] == 1
    path, record = models.resolve("./digits")
    assert path.resolve() == decoy / "model" and record is None
    copy_run(digits_run, tmp_path / "other")
    with pytest.raises(RegistryError, match=r"no model 'other' in the registry.*write it as a path: \./other"):
        models.resolve("other")


# ---------------------------------------------------------------- 7: registering loads the model and predicts


@pytest.mark.parametrize("kind", ["image", "text", "tabular", "corpus"])
def test_every_kind_of_model_registers_after_one_prediction(kind, request):
    run = request.getfixturevalue({"image": "digits_run", "text": "text_run", "tabular": "wine_run",
                                   "corpus": "lm_run"}[kind])
    rec = models.register(run.path, f"m-{kind}")
    model = modelyard.load(artifacts.folder(rec["artifact"]))
    assert model.preprocessor.kind == kind and rec["artifact"] == f"sha256/{rec['weights_sha256']}"


def test_sequence_models_get_a_sample_of_their_length():
    from modelyard.data.preprocess import SequencePreprocessor

    pre = SequencePreprocessor(length=40, mean=0.0, std=1.0)
    assert tuple(pre.transform(models.sample_input(pre)).shape) == (1, 1, 40)  # (N, 1, L)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.parametrize("damage, message", [
    ("truncated weights", r"does not load or predict.*model\.safetensors is corrupt"),
    ("a statistic that overflows", r"on a sample input.*(it answers \[\[nan|overflows this model's scaling)"),
])
def test_a_model_that_does_not_load_or_predict_is_not_registered(damage, message, wine_run, tmp_path, home):
    run = copy_run(wine_run, tmp_path / "run")
    if damage == "truncated weights":
        weights = run / "model" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    else:  # modelyard.json still loads, but every prediction is NaN
        meta_path = run / "model" / "modelyard.json"
        meta = json.loads(meta_path.read_text())
        next(iter(meta["preprocessing"]["numeric"].values()))["std"] = 1e-40
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match=message):
        models.register(run, "wine")
    assert models.list_versions() == [] and stored(home) == []
    assert not any((home / "artifacts" / "tmp").iterdir())


@pytest.mark.parametrize("link, message", [
    (lambda run, outside: (run / "model" / "notes.txt").symlink_to(outside), "outside the model folder"),
    (lambda run, outside: (run / "model" / "loop").symlink_to(run / "model"), "a folder"),
    (lambda run, outside: os.mkfifo(run / "model" / "pipe"), "not a regular file"),
])
def test_a_link_out_of_the_folder_or_a_pipe_is_not_copied_into_the_store(link, message, digits_run, tmp_path, home):
    outside = tmp_path / "secret.txt"
    outside.write_text("not part of any model")
    run = copy_run(digits_run, tmp_path / "run")
    link(run, outside)
    with pytest.raises(RegistryError, match=message):
        models.register(run, "digits")
    assert models.list_versions() == [] and stored(home) == []


@pytest.mark.parametrize("name", ["", "a/b", "..", "stats", "a\nb"])
def test_serve_refuses_a_name_no_url_can_reach(name, digits_run, capsys, monkeypatch):
    code, _, err = cli(["serve", digits_run.path, "--name", name, "--port", "0"], capsys, monkeypatch)
    assert code == 2 and "cannot be used in URLs" in err and "Traceback" not in err, err


def test_cli_register_refuses_a_folder_without_a_model(tmp_path, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    code, _, err = cli(["models", "register", tmp_path / "empty", "--name", "x"], capsys, monkeypatch)
    assert code == 2 and "no saved model" in err and "Traceback" not in err
    assert models.list_versions() == []


# ---------------------------------------------------------------- 8: a copy kept by content, checked on every use


def test_a_version_outlives_its_run_folder_and_is_stored_once(digits_run, tmp_path, home):
    run = copy_run(digits_run, tmp_path / "run")
    a, b = models.register(run, "digits"), models.register(run / "model", "digits")
    assert (a["version"], b["version"]) == (1, 2) and a["artifact"] == b["artifact"]
    assert stored(home) == [a["weights_sha256"]]
    shutil.rmtree(run)
    path, record = models.resolve("digits:1")
    x = np.zeros((3, 8, 8), dtype=np.float32)  # (N, H, W)
    assert modelyard.load(path).predict_proba(x).shape == (3, 10)
    assert record["run_path"] == str(run)  # where it came from, for lineage


def test_a_changed_or_missing_copy_is_refused_and_registering_again_restores_it(digits_run, tmp_path, home,
                                                                                capsys, monkeypatch):
    run = copy_run(digits_run, tmp_path / "run")
    rec = models.register(run, "digits")
    folder = artifacts.folder(rec["artifact"])
    with (folder / "modelyard.json").open("a") as f:
        f.write(" ")  # an edit that still loads
    with pytest.raises(RegistryError, match="digits:1: the files in .* have changed.*content hash mismatch"):
        models.resolve("digits")
    code, _, err = cli(["serve", "digits", "--port", "0"], capsys, monkeypatch)
    assert code == 2 and "content hash mismatch" in err and "serving" not in err
    models.register(run, "digits")  # the same content: its stored copy is replaced by a sound one
    assert models.resolve("digits:1")[0] == folder
    shutil.rmtree(folder)
    with pytest.raises(RegistryError, match="not in the artifact store.*MODELYARD_ARTIFACTS"):
        models.resolve("digits:1")


def test_moving_bytes_between_files_changes_the_hash(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, files in ((a, {"x": b"12", "y": b"3"}), (b, {"x": b"1", "y": b"23"})):
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
    assert artifacts.content_hash(a) != artifacts.content_hash(b)


def test_the_store_is_where_modelyard_artifacts_says(digits_run, tmp_path, monkeypatch, home):
    monkeypatch.setenv("MODELYARD_ARTIFACTS", str(tmp_path / "shared"))
    rec = models.register(digits_run.path, "digits")
    assert (tmp_path / "shared" / rec["artifact"] / "modelyard.json").is_file() and stored(home) == []


def test_a_version_registered_before_the_store_still_serves_from_its_run(digits_run, tmp_path, home, capsys,
                                                                        monkeypatch):
    home.mkdir()
    run = copy_run(digits_run, tmp_path / "run")
    old = create_engine(f"sqlite:///{home / 'registry.db'}")
    with old.begin() as conn:  # the registry as modelyard wrote it before the artifact store: schema 1
        conn.execute(text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO schema_version (version) VALUES (1)"))
        for sql in MIGRATIONS[0]:
            conn.execute(text(sql.replace("{id}", "id INTEGER PRIMARY KEY")))
        conn.execute(text("INSERT INTO model_versions (name, version, run_path, weights_sha256, metrics, created_by, "
                          "created_at) VALUES ('old', 1, :p, :h, '{}', 'me', '2026-01-01T00:00:00+00:00')"),
                     {"p": str(run), "h": artifacts.legacy_content_hash(run / "model")})
    old.dispose()
    path, record = models.resolve("old")
    assert path == run / "model" and record["artifact"] is None
    code, out, _ = cli(["models", "list"], capsys, monkeypatch)
    assert code == 0 and "no stored copy" in out
    flip_last_byte(run / "model" / "model.safetensors")
    with pytest.raises(RegistryError, match="content hash mismatch"):
        models.resolve("old")
    shutil.rmtree(run)
    with pytest.raises(RegistryError, match="registered before modelyard kept a copy.*Register it again"):
        models.resolve("old")


def test_serve_name_serves_the_registered_copy_after_the_run_is_deleted(digits_run, text_run, tmp_path):
    run = copy_run(digits_run, tmp_path / "run")
    rec = models.register(run, "digits")
    shutil.rmtree(run)
    copy_run(text_run, tmp_path / "digits")  # a folder named like the model, in the server's working directory
    server = Server("digits", "--no-auth")
    try:
        meta = httpx.get(f"{server.url}/v2/models/digits").json()
        assert meta["versions"] == ["1"] and meta["inputs"][0]["name"] == "input"  # the image model, not the folder
        x = np.zeros((2, 8, 8), dtype=np.float32)  # (N, H, W)
        body = {"inputs": [{"name": "input", "shape": [2, 8, 8], "datatype": "FP32", "data": x.ravel().tolist()}]}
        answer = httpx.post(f"{server.url}/v2/models/digits/infer", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        labels = next(o["data"] for o in answer.json()["outputs"] if o["name"] == "label")
        assert labels == list(modelyard.load(artifacts.folder(rec["artifact"])).predict(x))
        assert f"serving digits:1 (sha256 {rec['weights_sha256'][:12]}" in server.log()
    finally:
        server.stop()


def test_every_worker_serves_the_version_serve_resolved(digits_run, capsys, monkeypatch):
    """`serve NAME --workers 2` hands its workers NAME:VERSION, not NAME: a worker that replaces one that died
    after a newer version was registered must not serve that newer version beside the old one."""
    from modelyard.serving import app

    models.register(digits_run.path, "digits")
    models.register(digits_run.path, "digits")
    handed = {}
    monkeypatch.setattr(app._Supervisor, "run", lambda self: handed.update(json.loads(os.environ[app.ENV_CONFIG])))
    monkeypatch.setenv(app.ENV_CONFIG, "{}")  # so that what serve() writes there is undone after the test
    code, _, err = cli(["serve", "digits", "--workers", "2", "--port", "0"], capsys, monkeypatch)
    assert code == 0 and "serving digits:2" in err, err
    assert handed["model"] == "digits:2"
