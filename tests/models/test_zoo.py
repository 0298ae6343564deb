import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modelyard.errors import ModelError
from modelyard.models import MODELS, count_parameters, create_model

# The smallest input each family accepts, channels first.
SHAPES = {
    "logreg": (1, 8, 8),
    "mlp": (1, 8, 8),
    "lenet5": (1, 8, 8),
    "cifar-cnn": (3, 32, 32),
    "mnist1d-cnn": (1, 40),
    "resnet18": (3, 32, 32),
    "resnet50": (3, 32, 32),
}


def build(name, input_shape=None, num_classes=5, **fields):
    cfg = MODELS.get(name).config.model_validate({"name": name, **fields})
    return create_model(cfg, input_shape=input_shape or SHAPES[name], num_classes=num_classes)


# Token-id models: (data kind, extra factory inputs, output shape for a (2, 12) batch of ids).
TOKEN_MODELS = {
    "text-transformer": ("text", {"vocab_size": 40, "pad_id": 0}, (2, 5)),
    "gpt": ("corpus", {"vocab_size": 40, "task": "lm"}, (2, 12, 40)),
    "hf": ("text", {"vocab_size": 30522, "pad_id": 0}, (2, 5)),
}
ESTIMATORS = {"tfidf-linear"}


def test_every_model_in_the_registry_is_covered():
    assert set(MODELS.names()) == set(SHAPES) | set(TOKEN_MODELS) | ESTIMATORS


def _assert_trains(model, out):
    assert torch.isfinite(out).all()
    out.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(MODELS.names()))
def test_forward_backward_shape_and_finite(name, request):
    torch.manual_seed(0)
    if name in SHAPES:
        model = build(name)
        out = model(torch.randn(2, *SHAPES[name]))
        assert out.shape == (2, 5)
        _assert_trains(model, out)
    elif name in TOKEN_MODELS:
        kind, inputs, shape = TOKEN_MODELS[name]
        fields = {"pretrained": str(request.getfixturevalue("tiny_bert_dir"))} if name == "hf" else {}
        cfg = MODELS.get(name).config.model_validate({"name": name, **fields})
        model = create_model(cfg, input_shape=(12,), num_classes=5, kind=kind, **inputs)
        ids = torch.randint(3, 40, (2, 12))
        ids[1, 8:] = 0  # padding
        out = model(ids)
        assert out.shape == shape
        _assert_trains(model, out)
    else:  # an estimator: fitted, not trained by gradient
        model = create_model(MODELS.get(name).config.model_validate({"name": name}), input_shape=(), num_classes=3,
                             kind="text")
        texts = ["red apple", "green pear", "blue sky", "red cherry", "green lime", "blue sea"]
        model.fit(texts, np.array([0, 1, 2, 0, 1, 2]), texts[:3], np.array([0, 1, 2]))
        prob = model.predict_proba(["red", "blue whale"])
        assert prob.shape == (2, 3) and np.isfinite(prob).all() and np.allclose(prob.sum(axis=1), 1)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_lenet_adapts_to_input_size(shape):
    model = build("lenet5", shape, 10)
    assert model(torch.zeros(3, *shape)).shape == (3, 10)


def test_lenet_classic_kernels_on_28x28():
    model = build("lenet5", (1, 28, 28), 10)
    assert model.features[0].kernel_size == (5, 5)
    assert model.fc[0].in_features == 16 * 5 * 5  # the textbook 400


def test_models_reject_inputs_they_cannot_read():
    with pytest.raises(ModelError, match="needs images shaped"):
        build("lenet5", (40,))
    with pytest.raises(ModelError, match="needs at least 8x8"):
        build("cifar-cnn", (3, 4, 4))


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_pretrained_backbone_loads_and_head_is_fresh(tmp_path, fmt):
    torch.manual_seed(0)
    source = build("resnet18", num_classes=7)
    path = tmp_path / f"w.{fmt}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, path) if fmt == "safetensors" else torch.save(state, path)
    model = build("resnet18", num_classes=3, pretrained=str(path))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_mean, source.layer4[1].bn2.running_mean)
    assert model.fc.weight.shape == (3, 512)


def test_pretrained_file_missing_says_where_to_put_it(tmp_path):
    with pytest.raises(ModelError, match=r"not found at .*w.safetensors.*Nothing is downloaded"):
        build("resnet18", pretrained=str(tmp_path / "w.safetensors"))


def test_pretrained_from_another_architecture_is_refused(tmp_path):
    path = tmp_path / "mlp.safetensors"
    save_file(build("mlp").state_dict(), path)
    with pytest.raises(ModelError, match="do not fit this model outside its head"):
        build("resnet18", pretrained=str(path))


def test_pickled_objects_are_never_loaded(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a whole module, which needs unpickling code
    with pytest.raises(ModelError, match="cannot read weights"):
        build("mlp", pretrained=str(path))


def test_freeze_backbone_leaves_only_the_head_trainable():
    model = build("resnet18", freeze_backbone=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    sizes = count_parameters(model)
    assert sizes["trainable_parameters"] == 512 * 5 + 5 < sizes["parameters"]
