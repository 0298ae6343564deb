"""`modelyard runs list|rm|clean` on a folder of copied runs, run in-process through the CLI's entry point."""

import json
import os
import shutil

import pytest

from tests.conftest import cli_in_process as cli


@pytest.fixture
def runs_folder(tmp_path, digits_run):
    folder = tmp_path / "runs"
    ok, failed = folder / "tiny-20260101T000000Z", folder / "tiny-20260102T000000Z"
    shutil.copytree(digits_run.path, ok)
    shutil.copytree(digits_run.path, failed)
    status = json.loads((failed / "run.json").read_text())
    (failed / "run.json").write_text(json.dumps({**status, "status": "failed", "error": "ValueError: boom"}))
    (folder / "notes").mkdir()  # not a run: never listed, never deleted
    return folder, ok, failed


def test_list_shows_status_experiment_metric_and_size(capsys, runs_folder, digits_run):
    folder, ok, failed = runs_folder
    code, out, _ = cli(capsys, "runs", "list", folder, "--json")
    rows = {r["run"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {ok.name, failed.name}
    assert rows[ok.name]["status"] == "completed" and rows[failed.name]["status"] == "failed"
    accuracy = digits_run.metrics["test"]["accuracy"]
    assert rows[ok.name]["best"] == f"test accuracy {accuracy:.4f}" and rows[ok.name]["experiment"] == "tiny"
    assert rows[ok.name]["bytes"] == sum(f.stat().st_size for f in ok.rglob("*") if f.is_file())
    code, out, _ = cli(capsys, "runs", "list", folder)
    assert code == 0 and ok.name in out and "failed" in out and f"{accuracy:.4f}" in out
    assert rows[ok.name]["parent"] is None and "made from" not in out  # the column only when a derived run is listed


def test_clean_failed_deletes_only_failed_runs(capsys, runs_folder):
    folder, ok, failed = runs_folder
    code, out, _ = cli(capsys, "runs", "clean", folder, "--failed", "--yes")
    assert code == 0 and "deleted 1 run" in out
    assert ok.is_dir() and not failed.exists() and (folder / "notes").is_dir()
    code, out, _ = cli(capsys, "runs", "clean", folder, "--failed", "--yes")
    assert code == 0 and "no failed, interrupted or killed runs" in out


def test_rm_refuses_a_folder_that_is_not_a_run(capsys, runs_folder):
    folder, ok, _ = runs_folder
    code, _, err = cli(capsys, "runs", "rm", folder / "notes", ok, "--yes")
    assert code == 2 and "not a run directory" in err and "nothing was deleted" in err
    assert ok.is_dir() and (folder / "notes").is_dir()
    code, out, _ = cli(capsys, "runs", "rm", ok, "--yes")
    assert code == 0 and not ok.exists()


def test_clean_without_what_and_a_missing_folder_are_usage_errors(capsys, tmp_path):
    code, _, err = cli(capsys, "runs", "clean", tmp_path)
    assert code == 2 and "--failed" in err
    code, _, err = cli(capsys, "runs", "list", tmp_path / "nope")
    assert code == 2 and "not found" in err


def test_rm_refuses_a_project_folder_with_a_config_yaml(capsys, runs_folder, tmp_path):
    # a user's own folder that happens to hold a config.yaml is not a run: never listed, never deleted
    _, ok, _ = runs_folder
    project = tmp_path / "runs" / "my project"
    (project / "src").mkdir(parents=True)
    (project / "config.yaml").write_text("a: 1\n")
    code, _, err = cli(capsys, "runs", "rm", project, "--yes")
    assert code == 2 and "not a run directory" in err and (project / "src").is_dir()
    code, out, _ = cli(capsys, "runs", "list", tmp_path / "runs", "--json")
    assert code == 0 and "my project" not in {r["run"] for r in json.loads(out)}


def test_rm_of_a_link_to_a_run_removes_the_link_only(capsys, runs_folder, tmp_path):
    _, ok, _ = runs_folder
    link = tmp_path / "link"
    link.symlink_to(ok, target_is_directory=True)
    code, out, err = cli(capsys, "runs", "rm", link, "--yes")
    assert code == 0 and "removed the link" in out and "Traceback" not in err, err
    assert not link.exists() and not link.is_symlink() and (ok / "run.json").is_file()


def test_a_run_whose_process_is_gone_is_killed_and_cleaned(capsys, runs_folder):
    """SIGKILL leaves no chance to write `failed`: run.json says running, but its process is gone."""
    import socket
    import subprocess
    import sys

    folder, ok, _ = runs_folder
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    status = json.loads((ok / "run.json").read_text())
    (ok / "run.json").write_text(json.dumps({**status, "status": "running", "pid": int(gone.stdout),
                                             "host": socket.gethostname()}))
    code, out, _ = cli(capsys, "runs", "list", folder, "--json")
    assert {r["run"]: r["status"] for r in json.loads(out)}[ok.name] == "killed"
    running = folder / "tiny-20260103T000000Z"
    shutil.copytree(ok, running)
    (running / "run.json").write_text(json.dumps({**status, "status": "running", "pid": os.getpid(),
                                                  "host": socket.gethostname()}))
    code, out, _ = cli(capsys, "runs", "clean", folder, "--failed", "--yes")
    assert code == 0 and not ok.exists() and running.is_dir()  # a live process's run is left alone
