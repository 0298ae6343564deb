"""Image and sequence explanations (explain/image.py): every method on arrays, image files and sequences,
Integrated Gradients' completeness and baseline, the errors a user can cause, and the files `save` writes."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import modelyard
from mnist1d.utils import ObjectView
from modelyard.errors import ConfigError, DataError
from modelyard.explain import explain
from modelyard.explain.base import Explanation, Item, Subject
from modelyard.explain.image import safe_names
from tests.conftest import tiny_config

METHODS = ["integrated-gradients", "saliency", "grad-cam", "occlusion"]


@pytest.fixture(scope="module")
def lenet(tmp_path_factory, no_report):
    cfg = tiny_config(model={"name": "lenet5", "channels": [4, 8], "hidden_sizes": [16]}, train={"epochs": 1})
    return modelyard.load(modelyard.train(cfg, output=tmp_path_factory.mktemp("lenet"), quiet=True).path)


@pytest.fixture(scope="module")
def sequence_model(tmp_path_factory, no_report):
    import mnist1d.data

    cfg = {**tiny_config(data={"source": "builtin:mnist1d"}, train={"epochs": 1}),
           "model": {"name": "mnist1d-cnn", "channels": [4, 4], "kernel_size": 3}}
    defaults = mnist1d.data.get_dataset_args
    # 600 MNIST-1D sequences instead of 5,000: generating them is most of this fixture's time, read twice (training,
    # then the reference input, read here while the smaller set is still the source's).
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mnist1d.data, "get_dataset_args", lambda: ObjectView({**vars(defaults()), "num_samples": 600}))
        model = modelyard.load(modelyard.train(cfg, output=tmp_path_factory.mktemp("seq"), quiet=True).path)
        assert "(408 examples)" in Subject(model).reference.source
    return model


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return load_digits().images[:4]  # (4, 8, 8), pixels 0..16


@pytest.mark.parametrize("method", METHODS)
def test_each_method_gives_one_finite_map_per_image(lenet, digits, method):
    e = lenet.explain(digits, method=method)
    assert e.method == method and len(e) == 4 and e.settings
    for item in e:
        assert item.values.shape == (8, 8) and item.values.dtype == np.float64 and np.isfinite(item.values).all()
        assert item.values.any()
    if method in ("saliency", "grad-cam"):
        assert all((item.values >= 0).all() for item in e)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_gives_one_value_per_position_of_a_sequence(sequence_model, method):
    x = np.random.default_rng(0).normal(size=(3, 40)).astype(np.float32)
    e = sequence_model.explain(x, method=method)
    assert [item.values.shape for item in e] == [(40,)] * 3
    assert all(np.isfinite(item.values).all() for item in e)
    np.testing.assert_allclose(e[0].shown, x[0], atol=1e-5)  # shown in the sequence's own units
    if method == "occlusion":
        assert (e.settings["window"], e.settings["stride"]) == (6, 3)  # about 1/7 of 40 positions, half-overlapping


def test_image_files_are_explained_and_shown_as_they_look(lenet, digits, tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.png", "sub/b.png"]):
        Image.fromarray((digits[i] * 255 / 16).astype(np.uint8)).save(folder / name)
    e = lenet.explain(folder, method="integrated-gradients")
    assert [item.id for item in e] == ["a.png", "sub/b.png"]
    assert [item.values.shape for item in e] == [(8, 8)] * 2
    assert e[0].shown.shape == (8, 8, 1)
    np.testing.assert_allclose(e[0].shown[..., 0], digits[0] / 16, atol=1 / 255 + 1e-6)  # standardisation undone


def test_integrated_gradients_is_complete_from_the_mean_image(lenet, digits, monkeypatch):
    from captum.attr import IntegratedGradients

    used = {}
    original = IntegratedGradients.attribute

    def spy(self, inputs, baselines=None, **kwargs):
        used["baselines"] = baselines
        return original(self, inputs, baselines=baselines, **kwargs)

    monkeypatch.setattr(IntegratedGradients, "attribute", spy)
    e = lenet.explain(digits, method="integrated-gradients", n_steps=64)
    reference = Subject(lenet).reference
    assert "mean image" in e.settings["baseline"] and e.settings["n_steps"] == 64
    assert reference.value.abs().max() > 0.1  # the mean digit, not zeros
    assert torch.equal(used["baselines"], reference.value.unsqueeze(0).expand(4, -1, -1, -1))
    p_x = lenet.proba_of(lenet.transform(digits))
    p_ref = lenet.proba_of(reference.value.unsqueeze(0))[0]
    for i, item in enumerate(e):
        gap = p_x[i, lenet.labels.index(item.target)] - p_ref[lenet.labels.index(item.target)]
        delta = abs(item.values.sum() - gap)
        assert item.quality["convergence_delta"] == pytest.approx(delta, abs=1e-5)
        assert item.quality["relative_delta"] == pytest.approx(delta / abs(gap), rel=1e-3, abs=1e-5)
        assert item.quality["relative_delta"] < 0.05
    assert not e.notes


def test_integrated_gradients_takes_no_more_inputs_at_once_than_its_internal_batch_size(lenet, digits):
    whole = lenet.explain(digits, method="integrated-gradients", n_steps=8)
    chunked = lenet.explain(digits, method="integrated-gradients", n_steps=8, internal_batch_size=3)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a.values, b.values, atol=1e-6)
        assert a.quality["relative_delta"] == pytest.approx(b.quality["relative_delta"], abs=1e-5)


def test_too_few_steps_are_flagged(lenet, digits):
    e = lenet.explain(digits, method="integrated-gradients", n_steps=1)
    worst = max(item.quality["relative_delta"] for item in e)
    assert worst > 0.05
    assert len(e.notes) == 1 and "did not converge" in e.notes[0] and "Raise n_steps" in e.notes[0]


def test_grad_cam_on_a_network_without_convolutions_lists_the_methods_that_apply(digits_run, digits):
    with pytest.raises(ConfigError, match="grad-cam does not apply to mlp") as err:
        explain(digits_run.path, digits, method="grad-cam")
    assert "needs a convolution layer" in str(err.value)
    assert "integrated-gradients" in str(err.value) and "occlusion" in str(err.value)


def test_a_target_that_is_not_a_label_is_a_config_error(lenet, digits):
    with pytest.raises(ConfigError, match="--target 'seven' is not one of the model's labels"):
        lenet.explain(digits, method="occlusion", target="seven")
    e = lenet.explain(digits[:2], method="occlusion", target="7")
    assert [item.target for item in e] == ["7", "7"]


def test_occlusion_explains_a_model_without_gradients(lenet, digits, tmp_path):
    from modelyard.compress import compress

    int8 = modelyard.load(compress(lenet.model_dir.parent, "int8-dynamic", output=tmp_path, speed_iterations=1).path)
    e = int8.explain(digits[:2], method="occlusion")
    assert [item.values.shape for item in e] == [(8, 8)] * 2 and all(np.isfinite(it.values).all() for it in e)
    assert e.settings["window"] == 1 and "mean image" in e.settings["baseline"]
    with pytest.raises(ConfigError, match="needs gradients, and a torch-int8 model gives none.*Methods that do: "
                                          "occlusion"):
        int8.explain(digits[:2], method="integrated-gradients")
    assert explain(int8, digits[:1]).method == "occlusion"  # the default falls back to what applies


def test_gradient_methods_explain_a_bf16_model(lenet, digits, tmp_path):
    from modelyard.compress import compress

    bf16 = modelyard.load(compress(lenet.model_dir.parent, "bf16", output=tmp_path, speed_iterations=1).path)
    for method in ("integrated-gradients", "grad-cam"):
        e = bf16.explain(digits[:2], method=method, **({"n_steps": 8} if method == "integrated-gradients" else {}))
        assert all(item.values.shape == (8, 8) and np.isfinite(item.values).all() for item in e)


def test_occlusion_options_are_checked(lenet, digits):
    with pytest.raises(ConfigError, match="window 9 is larger than the input"):
        lenet.explain(digits, method="occlusion", window=9)
    with pytest.raises(ConfigError, match="stride 3 is larger than the window 2"):
        lenet.explain(digits, method="occlusion", window=2, stride=3)
    with pytest.raises(ConfigError, match="does not take n_steps"):
        lenet.explain(digits, method="occlusion", n_steps=5)
    assert lenet.explain(digits[:1], method="occlusion", window=3, stride=2).settings["stride"] == 2


def test_an_array_of_the_wrong_rank_is_a_data_error(lenet):
    with pytest.raises(DataError, match=r"image arrays must be shaped \(N, H, W\)"):
        lenet.explain(np.zeros((3, 5)), method="integrated-gradients")


def test_safe_names_stay_inside_the_folder_and_unique():
    ids = ["sub/dir/x.png", "sub_dir_x.png", "../../etc/passwd", "", ".hidden", "A.png", "a.png", "é <x>.jpg"]
    names = safe_names(ids)
    assert names[:3] == ["sub_dir_x.png", "sub_dir_x-2.png", "etc_passwd.png"]
    assert len({n.lower() for n in names}) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.png", n) for n in names)


def test_save_writes_a_page_the_json_and_a_png_per_input(tmp_path):
    rng = np.random.default_rng(0)
    items = [Item(id=id_, predicted="<b>cat</b>", target=target, probability=0.9, values=rng.normal(size=(8, 8)),
                  units=None, positions=None, shown=rng.uniform(size=(8, 8, 3)), quality={"relative_delta": 0.01})
             for id_, target in [("sub/dir/x.png", "<b>cat</b>"), ("sub_dir_x.png", "dog & $x^$")]]
    e = Explanation(method="integrated-gradients", kind="image", labels=["<b>cat</b>", "dog & $x^$"], items=items,
                    settings={"n_steps": 50})
    index = e.save(tmp_path / "out")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["explanations.json", "index.html", "sub_dir_x-2.png", "sub_dir_x.png"]
    with Image.open(tmp_path / "out" / "sub_dir_x.png") as im:
        assert im.format == "PNG" and im.size[0] <= 1060
    page = index.read_text()
    assert "&lt;b&gt;cat&lt;/b&gt;" in page and "dog &amp; $x^$" in page and "<b>cat</b>" not in page
    assert page.count("data:image/png;base64,") == 2
    assert json.loads((tmp_path / "out" / "explanations.json").read_text())["items"][0]["shape"] == [8, 8]


def test_a_sequence_explanation_saves_a_plot_per_input(sequence_model, tmp_path):
    x = np.random.default_rng(1).normal(size=(2, 40))
    sequence_model.explain(x, method="occlusion").save(tmp_path)
    for name in ("1.png", "2.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG"


def test_grad_cam_weighs_the_rectified_maps_of_the_last_convolution(lenet, digits):
    # features.3 is LeNet's last Conv2d, features.4 its ReLU: Grad-CAM before the ReLU gave mostly all-zero maps
    e = lenet.explain(digits, method="grad-cam")
    assert e.settings["layer"] == "features.4"
    assert sum(float(np.abs(item.values).sum()) > 0 for item in e) >= 1
