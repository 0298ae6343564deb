"""The reference input travels with the model folder: a registered copy served without its run explains from the
same training mean as the run."""

import shutil

import numpy as np
import pytest
import torch

import modelyard
from modelyard.explain.base import Subject
from modelyard.explain.reference import FILE, _CACHE
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    return modelyard.train(tiny_config(model={"name": "lenet5"}, train={"epochs": 1}),
                           output=tmp_path_factory.mktemp("runs"), quiet=True)


def test_training_writes_the_mean_input_beside_the_weights(lenet, tmp_path):
    assert (lenet.path / "model" / FILE).is_file()
    from_run = Subject(modelyard.load(lenet.path)).reference
    bare = tmp_path / "bare-model"  # a model folder with no run around it, as the artifact store keeps it
    shutil.copytree(lenet.path / "model", bare)
    _CACHE.clear()
    from_folder = Subject(modelyard.load(bare)).reference
    assert "mean image" in from_folder.source
    torch.testing.assert_close(from_folder.value, from_run.value)
    assert float(from_folder.value.abs().sum()) > 0  # not the per-channel-mean fallback (all zeros)


def test_a_bare_folder_without_the_file_says_it_fell_back(lenet, tmp_path):
    bare = tmp_path / "old-model"
    shutil.copytree(lenet.path / "model", bare)
    (bare / FILE).unlink()
    _CACHE.clear()
    ref = Subject(modelyard.load(bare)).reference
    assert "per-channel mean" in ref.source and "no run around it" in ref.source
    assert np.all(ref.value.numpy() == 0)


def test_a_compressed_copy_keeps_the_parent_reference(lenet, tmp_path):
    from modelyard.compress import compress

    derived = compress(lenet.path, "bf16", output=tmp_path, speed_iterations=1)
    path = getattr(derived, "path", derived)
    assert (path / "model" / FILE).read_bytes() == (lenet.path / "model" / FILE).read_bytes()
