import json

import pytest

from modelyard.config import ExperimentConfig, apply_override, load_config
from modelyard.errors import ConfigError
from tests.conftest import ROOT, run_cli, tiny_config


def write(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


GOOD = "name: t\ndata:\n  source: builtin:digits\nmodel:\n  name: lenet5\ntrain:\n  lr: 0.01\n"


def test_defaults_are_filled_in(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.train.lr == 0.01 and cfg.train.optimizer == "adamw" and cfg.model.channels == [6, 16]


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD.replace("  lr:", "  lrate:"), ["train.lrate", "line 7", "did you mean 'train.lr'", "exp.yaml"]),
        (GOOD.replace("model:", "modle:"), ["modle", "line 4", "did you mean 'model'"]),
        (GOOD.replace("name: lenet5", "name: lenet"), ["model.name", "'lenet'", "Did you mean 'lenet5'", "resnet18"]),
        (GOOD + "  epochs: 0\n", ["train.epochs", "line 8", "greater than or equal to 1"]),
        (GOOD.replace("name: lenet5", "name: lenet5\n  chanels: [4, 8]"), ["model.chanels", "did you mean 'model.channels'"]),
        (GOOD + "  monitor: val_acc\n", ["train.monitor", "val_accuracy"]),
        ("name: t\nmodel:\n  name: mlp\n", ["data", "required key is missing"]),
        ("- just\n- a list\n", ["top level must be a mapping"]),
        ("name: [unclosed\n", ["not valid YAML"]),
        (GOOD.replace("name: t", "name: " + "t" * 300), ["name (line 1)", "at most 200 characters", "got 300"]),
    ],
)
def test_invalid_configs_say_what_where_and_how(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    for piece in expected:
        assert piece in str(err.value)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("no/such/file.yaml")


def test_overrides_are_typed_and_validated(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), ["train.lr=0.5", "model.channels=[4, 8]", "train.grad_clip=1"])
    assert cfg.train.lr == 0.5 and cfg.model.channels == [4, 8] and cfg.train.grad_clip == 1.0
    with pytest.raises(ConfigError, match=r"train\.lrr \(from --set\).*did you mean 'train.lr'"):
        load_config(write(tmp_path, GOOD), ["train.lrr=0.5"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(write(tmp_path, GOOD), ["train.lr"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_override({"train": {"lr": 1}}, "train.lr.x=2")


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "exp.yaml"
    path.write_text("name: t\ndata:\n  source: csv:data.csv\n  target: y\nmodel:\n  name: mlp\n")
    assert load_config(path).data.source == f"csv:{tmp_path / 'sub' / 'data.csv'}"


def test_schema_covers_every_model():
    from modelyard.models import MODELS

    schema = ExperimentConfig.model_json_schema()
    names = {d["properties"]["name"]["const"] for d in schema["$defs"].values()
             if "const" in d.get("properties", {}).get("name", {})}
    assert names == {e.name for e in MODELS} and {"logreg", "text-transformer"} <= names


def test_cli_config_show_and_schema(tmp_path):
    path = write(tmp_path, GOOD)
    shown = run_cli("config", "show", path, "--set", "train.epochs=3", check=True).stdout
    assert "epochs: 3" in shown and "optimizer: adamw" in shown
    assert "properties" in json.loads(run_cli("config", "schema", check=True).stdout)
    assert "momentum" not in shown and "gamma" not in shown  # AdamW, no step schedule: not read, not shown
    everything = run_cli("config", "show", path, "--all", check=True).stdout
    assert "momentum: 0.9" in everything and "gamma: 0.1" in everything
    sgd = run_cli("config", "show", path, "--set", "train.optimizer=sgd", "--set", "train.schedule=step",
                  check=True).stdout
    assert "momentum: 0.9" in sgd and "gamma: 0.1" in sgd and "tokenizer" not in sgd
    bad = run_cli("config", "show", write(tmp_path, GOOD.replace("  lr:", "  lrate:")))
    assert bad.returncode == 2 and "did you mean 'train.lr'" in bad.stderr and "Traceback" not in bad.stderr


def test_dict_configs_validate_too():
    assert load_config(tiny_config()).model.hidden_sizes == [32]
    with pytest.raises(ConfigError, match="greater than 0"):
        load_config(tiny_config(model={"name": "mlp", "hidden_sizes": [8, -1]}))


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "examples").glob("*.yaml") if not p.name.startswith("value-")),
                         ids=lambda p: p.name)
def test_every_example_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.data.source and cfg.model.name in path.read_text()


def test_hf_model_ids_are_kept_but_relative_paths_resolve(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: t\ndata:\n  source: builtin:debian-sections\nmodel:\n  name: hf\n  pretrained: org/model\n")
    assert load_config(path).model.pretrained == "org/model"  # a Hugging Face id, looked up in the cache
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert load_config(path).model.pretrained == str(tmp_path / "org" / "model")  # a folder beside the config


def test_a_billion_laughs_and_a_5000_digit_number_are_clear_errors_at_once(tmp_path):
    # nine nested aliases of ten items: 300 bytes that expand to 10**9; the duplicate-key walk and the message's
    # `got` each expanded them (minutes, then killed); a 5000-digit int passed PyYAML's int() as an internal error
    anchors = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    anchors += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    laughs = "\n".join(anchors) + "\n" + GOOD.replace("name: lenet5", "name: mlp\n  hidden_sizes: *a8")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, laughs))
    assert "a8 (line 9): unknown key" in str(err.value) and "model.hidden_sizes.0" in str(err.value)
    assert len(str(err.value)) < 5000
    with pytest.raises(ConfigError, match="a number has more than 4,300 digits"):
        load_config(write(tmp_path, GOOD + "  epochs: " + "9" * 5000 + "\n"))
    with pytest.raises(ConfigError, match=r"train\.epochs \(from --set\)"):
        load_config(write(tmp_path, GOOD), ["train.epochs=" + "9" * 5000])
