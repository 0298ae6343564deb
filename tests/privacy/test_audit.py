"""The membership-inference audit: its scoring against hand computations, the CLI, the calibrated attack's reference
models (trained without any audited example, and reused), and the errors a user can cause."""

import json
import shutil

import numpy as np
import pytest
import yaml

from modelyard.data.base import RawData
from modelyard.privacy.audit import attack_scores, audit_privacy, calibrated_attacks, example_statistics, tpr_at
from modelyard.runs import RunDir
from tests.conftest import cli_in_process, tiny_config


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory, no_report):
    """An MLP on a few hundred digits, trained long enough to fit them better than the held-out ones."""
    import modelyard

    cfg = tiny_config(data={"source": "builtin:digits", "split": {"val": 0.2, "test": 0.6}},
                      model={"name": "mlp", "hidden_sizes": [32]},
                      train={"epochs": 6, "batch_size": 32, "lr": 0.01}, evaluate={"bootstrap": 0})
    return modelyard.train(cfg, output=tmp_path_factory.mktemp("runs"), quiet=True).path


def test_the_scores_match_a_hand_computation():
    # members' losses 0.1, 0.5; non-members' 0.3, 0.9: of the 4 pairs, 3 have the member's loss lower
    auc, tpr = attack_scores(-np.array([0.1, 0.5]), -np.array([0.3, 0.9]))
    assert auc == pytest.approx(0.75)
    # thresholds from high to low: member (tpr .5), non-member (fpr .5): at 1% FPR half the members are found
    assert tpr == pytest.approx(0.5)
    assert tpr_at(np.array([0.0, 0.02]), np.array([0.0, 1.0]), 0.01) == pytest.approx(0.5)
    assert tpr_at(np.array([0.0, 0.0, 0.5, 1.0]), np.array([0.0, 0.4, 0.8, 1.0]), 0.01) == pytest.approx(0.408)


class FixedModel:
    """Gives example i its true label ("a") with probability p[i]."""
    labels = ["a", "b"]

    def __init__(self, p):
        self.p = np.asarray(p)

    def predict_raw(self, raw):
        p = self.p[raw.x]
        return np.stack([p, 1 - p], axis=1)


def test_calibration_subtracts_what_reference_models_make_of_each_example():
    raw = RawData(x=np.arange(4), y=np.array(["a"] * 4), kind="sequence")
    members, non_members = np.array([0, 1]), np.array([2, 3])
    target = {side: example_statistics(FixedModel([0.9, 0.6, 0.8, 0.3]), raw.take(idx))
              for side, idx in (("members", members), ("non_members", non_members))}
    # losses .105, .511 against .223, 1.204: 3 of 4 pairs ordered
    assert attack_scores(-target["members"]["loss"], -target["non_members"]["loss"])[0] == pytest.approx(0.75)
    # example 2 is easy for a model that never saw it (0.9), so its 0.8 is no sign of membership
    loss, logit = calibrated_attacks(target, [FixedModel([0.5, 0.5, 0.9, 0.5])], raw, members, non_members)
    assert (loss.id, logit.id) == ("calibrated-loss", "calibrated-logit")
    assert loss.auc == pytest.approx(1.0) and logit.auc == pytest.approx(1.0)
    assert target["members"]["logit"] == pytest.approx([np.log(9), np.log(1.5)])


def test_the_cli_prints_the_table_and_writes_privacy_json(overfit_run, capsys):
    code, out, err = cli_in_process(capsys, "audit", "privacy", overfit_run, "--n", 60, "--reference-models", 0)
    assert code == 0, err
    assert out.splitlines()[0].split() == ["attack", "AUC", "TPR@1%FPR", "members", "non-members"]
    report = json.loads((overfit_run / "audit" / "privacy.json").read_text())
    (attack,) = report["attacks"]
    assert attack["attack"] == "loss threshold" and attack["members"] == attack["non_members"] == 60
    assert f"{attack['auc']:.3f}" in out.splitlines()[1]
    assert report["mean_loss"]["members"] < report["mean_loss"]["non_members"]  # the model fits its own examples
    assert attack["auc"] > 0.5


def test_the_calibrated_attack_trains_reference_models_without_the_audited_examples(overfit_run, tmp_path):
    lines = []
    report = audit_privacy(overfit_run, n=40, seed=1, reference_models=1, reference_epochs=2, work=tmp_path,
                           log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("training reference model 1 of 1 (2 epochs)")
    assert [a["attack"] for a in report["attacks"]] == ["loss threshold", "calibrated loss (1 reference model)",
                                                        "calibrated logit (1 reference model)"]
    assert all(0.0 <= a["auc"] <= 1.0 and 0.0 <= a["tpr_at_1pct_fpr"] <= 1.0 for a in report["attacks"])
    (reference,) = report["reference_models"]
    seen = RunDir(reference).splits()["splits"]
    audited = set(seen["test"])
    assert len(audited) == 80 and not audited & set(seen["train"]) and not audited & set(seen["val"])
    target = RunDir(overfit_run).splits()["splits"]
    assert len(audited & set(target["train"])) == 40  # the audited members are the target's training examples

    again = audit_privacy(overfit_run, n=40, seed=1, reference_models=1, reference_epochs=2, work=tmp_path,
                          log=lines.append)
    assert len(lines) == 1, "the reference model was trained again instead of reused"
    assert again["reference_models"] == [reference] and again["attacks"] == report["attacks"]


def _copy(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("audit", "checkpoints"))
    return copy


def test_too_many_examples_exit_2(overfit_run, capsys):
    code, _, err = cli_in_process(capsys, "audit", "privacy", overfit_run, "--n", 5000)
    assert code == 2 and "--n 5000" in err and "pass --n between 1 and" in err


def test_a_derived_run_asked_for_reference_models_exits_2(overfit_run, tmp_path, capsys):
    copy = _copy(overfit_run, tmp_path)
    RunDir(copy).set_status(lineage={"parent": str(overfit_run), "parent_name": overfit_run.name,
                                     "method": "quantize", "params": {}})
    code, _, err = cli_in_process(capsys, "audit", "privacy", copy, "--n", 10)
    assert code == 2 and "derived run" in err and "--reference-models 0" in err
    code, _, err = cli_in_process(capsys, "audit", "privacy", copy, "--n", 10, "--reference-models", 0)
    assert code == 0, err


def test_a_run_without_a_test_split_exits_2(overfit_run, tmp_path, capsys):
    copy = _copy(overfit_run, tmp_path)
    record = json.loads((copy / "splits.json").read_text())
    del record["splits"]["test"]
    (copy / "splits.json").write_text(json.dumps(record))
    code, _, err = cli_in_process(capsys, "audit", "privacy", copy)
    assert code == 2 and "no test split" in err


def test_a_language_model_exits_2(overfit_run, tmp_path, capsys):
    copy = _copy(overfit_run, tmp_path)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a line of text\n")
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["data"]["source"] = f"text:{corpus}"
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = cli_in_process(capsys, "audit", "privacy", copy)
    assert code == 2 and "language model" in err


def test_the_report_shows_the_audit_and_the_privacy_spent(overfit_run, capsys):
    from modelyard.report.privacy import privacy_section
    from modelyard.runs import RunDir

    run = RunDir.open(overfit_run)
    assert privacy_section(run, {}) == "" or (overfit_run / "audit" / "privacy.json").exists()
    code, _, err = cli_in_process(capsys, "audit", "privacy", overfit_run, "--n", 30, "--reference-models", 0)
    assert code == 0 and "report:" in err
    page = privacy_section(run, {"privacy": {"epsilon": 7.99, "delta": 1e-5, "accountant": "rdp",
                                             "noise_multiplier": 0.654, "max_grad_norm": 1.0, "sample_rate": 0.05,
                                             "target_epsilon": 8, "notes": ["privacy: replaced 1 layer <b>"]}})
    assert "<h2>Privacy</h2>" in page and "epsilon 7.99" in page and "target epsilon 8" in page
    assert "&lt;b&gt;" in page  # notes are escaped
    assert "loss threshold" in page and "ROC-AUC" in page  # the audit's table, from RUN/audit/privacy.json
    (overfit_run / "audit" / "privacy.json").write_text("{damaged")
    assert privacy_section(run, {}) == ""  # a damaged audit file never fails a report
