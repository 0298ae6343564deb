"""Knowledge distillation: the loss against a hand-computed value, `compress --method distill` on a digits MLP and a
tiny BERT (lineage, the parent's figures, a smaller student), `train.distill` checks and a resumed distilled run.

Every run here skips the HTML report (write_report is replaced by a no-op): it is not what is tested, and rendering
it would cost most of each run's time.
"""

import hashlib
import json
import math
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

import modelyard
from modelyard.compress import compress
from modelyard.errors import ConfigError
from modelyard.runs import RunDir
from modelyard.training import Callback
from modelyard.training.distill import distillation_loss
from tests.conftest import cli_in_process, tiny_config
from tests.models.test_hf import hf_config

TEACHER = tiny_config(name="teacher", model={"name": "mlp", "hidden_sizes": [64]},
                      train={"epochs": 3, "batch_size": 64, "lr": 0.01}, evaluate={"bootstrap": 20})


@pytest.fixture(scope="module")
def teacher(no_report, tmp_path_factory):
    return modelyard.train(TEACHER, output=tmp_path_factory.mktemp("teacher"), quiet=True).path


@pytest.fixture(scope="module")
def tfidf_teacher(no_report, tmp_path_factory, topics_csv):
    cfg = tiny_config(name="tfidf", data={"source": f"csv:{topics_csv}", "text": "description", "target": "topic"})
    cfg["model"] = {"name": "tfidf-linear"}
    return modelyard.train(cfg, output=tmp_path_factory.mktemp("tfidf"), quiet=True).path


def fingerprint(folder) -> dict:
    """Every file of a run directory and its SHA-256: what 'the parent is never modified' compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_loss_is_hintons_mix_of_softened_kl_and_cross_entropy():
    # Teacher logits (2 ln 3, 0) at T=2 soften to (3/4, 1/4); the student's (0, 0) is uniform at any T.
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[2 * math.log(3), 0.0]])
    y = torch.tensor([0])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    ce = math.log(2)
    for alpha in (0.0, 0.3, 1.0):
        loss = distillation_loss(student, teacher, y, temperature=2.0, alpha=alpha)
        assert float(loss) == pytest.approx(alpha * 2.0 ** 2 * kl + (1 - alpha) * ce, rel=1e-6)
    # Summed over a batch, each example counts once; the mean divides by the batch.
    both = distillation_loss(student.repeat(2, 1), teacher.repeat(2, 1), y.repeat(2), temperature=2.0, alpha=0.3,
                             reduction="sum")
    assert float(both) == pytest.approx(2 * (0.3 * 4 * kl + 0.7 * ce), rel=1e-6)
    # A student that matches the teacher pays only its share of the cross-entropy.
    same = distillation_loss(teacher, teacher, y, temperature=4.0, alpha=0.5)
    assert float(same) == pytest.approx(0.5 * float(torch.nn.functional.cross_entropy(teacher, y)), rel=1e-6)


def test_a_digits_mlp_distils_into_a_narrower_student(teacher, tmp_path, capsys):
    before = fingerprint(teacher)
    code, out, err = cli_in_process(capsys, "compress", teacher, "--method", "distill", "--width", "0.5",
                                    "--temperature", "3", "--speed-iterations", "2", "--output", tmp_path)
    assert code == 0, err
    student = RunDir(out.strip().splitlines()[-1])
    m = student.read_json(student.metrics_path)
    parent = RunDir(teacher).read_json(RunDir(teacher).metrics_path)
    assert student.lineage()["parent"] == str(teacher.resolve()) and student.lineage()["method"] == "distill"
    assert m["params"]["width"] == 0.5 and m["params"]["temperature"] == 3
    assert json.loads((student.model_dir / "modelyard.json").read_text())["lineage"]["parent_name"] == teacher.name
    assert student.splits() == RunDir(teacher).splits()  # scored on the teacher's own test split
    assert student.config().train.distill.teacher == str(teacher.resolve())
    assert student.config().model.hidden_sizes == [32]
    assert m["parameters"] < parent["parameters"]
    assert m["parent_figures"]["test"]["accuracy"] == parent["test"]["accuracy"]
    assert m["speed"]["parent"]["throughput_batch32"] > 0 and m["speed"]["this"]["throughput_batch32"] > 0
    assert m["test"]["accuracy"] > 0.85 and m["test"]["accuracy"] > parent["test"]["accuracy"] - 0.05
    assert "test accuracy:" in out and "hidden_sizes [64] -> [32]" in out
    assert fingerprint(teacher) == before


def test_a_tiny_bert_distils_into_one_of_its_two_layers(no_report, tmp_path, topics_csv, tiny_bert_dir):
    teacher = modelyard.train(hf_config(topics_csv, tiny_bert_dir), output=tmp_path / "t", quiet=True).path
    with pytest.raises(ConfigError, match=r"--layers 2 must be from 1 to 1: the teacher .* has 2 layers"):
        compress(teacher, "distill", layers=2)
    with pytest.raises(ConfigError, match="--width narrows torch models"):
        compress(teacher, "distill", width=0.5)
    before = fingerprint(teacher)
    run = compress(teacher, "distill", output=tmp_path / "s", speed_iterations=2, epochs=1)
    m = run.metrics
    assert m["params"]["layers"] == 1 and m["distill"]["kept_layers"] == [1] and m["parameters"] < m[
        "parent_figures"]["parameters"]
    hf = json.loads((run.path / "model" / "hf" / "config.json").read_text())
    assert hf["num_hidden_layers"] == 1
    # The student started from the teacher's top layer (renumbered 0) and kept its embeddings.
    init = load_file(str(next((tmp_path / "s").glob("hf-distill-L1-init-*")) / "model.safetensors"))
    taught = load_file(str(teacher / "model" / "hf" / "model.safetensors"))
    layer = "output.dense.weight"
    assert torch.equal(init[f"bert.encoder.layer.0.{layer}"], taught[f"bert.encoder.layer.1.{layer}"])
    assert torch.equal(init["bert.embeddings.word_embeddings.weight"], taught["bert.embeddings.word_embeddings.weight"])
    assert not any(k.startswith("bert.encoder.layer.1.") for k in init)
    assert modelyard.load(run.path).labels == modelyard.load(teacher).labels
    assert fingerprint(teacher) == before


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, loop):
        if loop.state.step == self.step:
            raise RuntimeError("simulated crash")


def test_a_resumed_distilled_run_reloads_its_teacher_and_ends_like_an_uninterrupted_one(teacher, tmp_path,
                                                                                        monkeypatch, capsys):
    from modelyard.training.distill import Teacher

    loads = []
    real = Teacher.load.__func__
    monkeypatch.setattr(Teacher, "load", classmethod(lambda cls, *a, **k: loads.append(1) or real(cls, *a, **k)))
    # A student wider than its teacher is allowed, with a one-line warning under the run summary.
    cfg = tiny_config(name="student", model={"name": "mlp", "hidden_sizes": [96]},
                      train={"epochs": 2, "batch_size": 128, "lr": 0.01, "checkpoint_every_steps": 5,
                             "distill": {"teacher": str(teacher), "temperature": 2.0, "alpha": 0.7}},
                      evaluate={"bootstrap": 20})
    whole = modelyard.train(cfg, output=tmp_path / "whole", quiet=False)
    assert "warning: the student has more parameters" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="simulated crash"):
        modelyard.train(cfg, output=tmp_path / "crash", callbacks=[CrashAt(13)], quiet=True)
    crashed = next((tmp_path / "crash").iterdir())
    loads.clear()
    resumed = modelyard.train(resume=crashed, quiet=True)
    assert loads == [1]  # the resume loaded the teacher again
    assert resumed.metrics["test"]["accuracy"] == whole.metrics["test"]["accuracy"]
    assert resumed.metrics["test"]["log_loss"] == pytest.approx(whole.metrics["test"]["log_loss"], rel=1e-5)
    # Without the teacher the same student ends elsewhere: the teacher's targets were in the loss.
    cfg["train"] = {k: v for k, v in cfg["train"].items() if k != "distill"}
    plain = modelyard.train(cfg, output=tmp_path / "plain", quiet=True)
    assert plain.metrics["test"]["log_loss"] != pytest.approx(whole.metrics["test"]["log_loss"], rel=1e-5)


def test_train_distill_checks_the_teacher_before_the_first_step(teacher, tfidf_teacher, tmp_path, wine_csv):
    def student(**train):
        return tiny_config(name="student", train={"distill": {"teacher": str(teacher)}, **train})

    wine = student()
    wine["data"] = {"source": f"csv:{wine_csv}", "target": "cultivar"}
    with pytest.raises(ConfigError, match=r"the teacher's labels \['0', '1', .*\] differ from the student "
                                          r"data's labels \['class_0', 'class_1', 'class_2'\]"):
        modelyard.train(wine, output=tmp_path, quiet=True)
    raw_pixels = student()
    raw_pixels["data"] = {"source": "builtin:digits", "image": {"normalize": False}}
    with pytest.raises(ConfigError, match=r"the student's inputs are not the teacher's \(preprocessing.mean"):
        modelyard.train(raw_pixels, output=tmp_path, quiet=True)
    missing = student(distill={"teacher": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match=r"train.distill.teacher .*nowhere: run directory .* not found"):
        modelyard.train(missing, output=tmp_path, quiet=True)
    tfidf = student(distill={"teacher": str(tfidf_teacher)})
    with pytest.raises(ConfigError, match=r"teacher's model \(tfidf-linear, family estimator\) is a TF-IDF model, "
                                          r"which gives no logits"):
        modelyard.train(tfidf, output=tmp_path, quiet=True)
    started = [p for p in tmp_path.iterdir() if p.name.startswith("student-")]
    assert started and all(RunDir(p).current_status() == "failed" and not (p / "checkpoints").exists()
                           for p in started)  # each stopped before its first step


def test_compress_distill_refuses_bad_teachers_and_options(teacher, tfidf_teacher, tmp_path, capsys):
    before = fingerprint(teacher)
    failed = tmp_path / "failed-teacher"
    shutil.copytree(teacher, failed)
    RunDir(failed).set_status(status="failed", error="RuntimeError: boom")
    cases = [
        ((tmp_path / "nowhere", "--method", "distill"), "not found"),
        ((failed, "--method", "distill"), "is failed, not completed"),
        ((tfidf_teacher, "--method", "distill"), "distill does not apply to .* estimator model"),
        ((teacher, "--method", "distill", "--layers", "2"), "--layers is for Transformer teachers"),
        ((teacher, "--method", "distill", "--layers", "0"), "layers"),
        ((teacher, "--method", "distill", "--set", "seed=3"), "cannot change"),
        ((teacher, "--method", "distill", "--set", "data.split.test=0.3"), "cannot change"),
        ((teacher, "--method", "distill", "--amount", "0.5"), "does not take --amount"),
    ]
    for args, message in cases:
        code, out, err = cli_in_process(capsys, "compress", *args, "--output", tmp_path / "out")
        assert code == 2, (args, out, err)
        assert re.search(message, err), (args, err)
        assert "Traceback" not in err
    assert fingerprint(teacher) == before
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
