import numpy as np
import pandas as pd
import pytest
from PIL import Image

from modelyard.config import load_config
from modelyard.data import build_data, read_source
from modelyard.errors import DataError
from tests.conftest import tiny_config


def data_cfg(**data):
    return load_config(tiny_config(data=data)).data


def build(**data):
    return build_data(data_cfg(**data), seed=0)


def test_digits_split_is_stratified_and_deterministic():
    a, b = build(source="builtin:digits"), build(source="builtin:digits")
    assert (len(a.train), len(a.val), len(a.test)) == (1257, 270, 270)
    assert a.test_names == b.test_names
    counts = np.bincount(a.test.y.numpy())
    assert counts.min() >= 25 and counts.max() <= 29  # ~27 of each digit
    assert a.input_shape == (1, 8, 8)
    c = build_data(data_cfg(source="builtin:digits", split={"seed": 1}), seed=0)
    assert c.test_names != a.test_names


def test_mnist1d_uses_the_package_defaults():
    bundle = build(source="builtin:mnist1d")
    assert len(bundle.train) + len(bundle.val) == 4000 and len(bundle.test) == 1000
    assert bundle.input_shape == (1, 40)


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(DataError, match="builtin:digits.*imagefolder:PATH"):
        build(source="builtin:mnist")
    with pytest.raises(DataError, match="scheme:argument"):
        build(source="digits")


# ---------------------------------------------------------------- CSV


def write_csv(tmp_path, frame: pd.DataFrame):
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path


def table(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                         "colour": rng.choice(["red", "blue"], size=n), "y": np.tile(["x", "y", "z"], n // 3)})


def test_csv_numeric_and_categorical_columns(tmp_path):
    bundle = build(source=f"csv:{write_csv(tmp_path, table())}", target="y")
    assert bundle.input_shape == (4,)  # a, b, and colour one-hot (blue, red)
    assert bundle.labels == ["x", "y", "z"]


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        build(source=f"csv:{tmp_path / 'nope.csv'}", target="y")


def test_csv_missing_column_suggests_the_closest(tmp_path):
    with pytest.raises(DataError, match="no column 'lable'.*Did you mean 'label'"):
        build(source=f"csv:{write_csv(tmp_path, table().rename(columns={'y': 'label'}))}", target="lable")
    with pytest.raises(DataError, match="data.target is not set"):
        build(source=f"csv:{write_csv(tmp_path, table())}")


def test_csv_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="is empty"):
        build(source=f"csv:{path}", target="y")


def test_csv_non_numeric_value_names_the_line(tmp_path):
    frame = table().astype({"a": object})
    frame.loc[7, "a"] = "twelve"
    with pytest.raises(DataError, match=r"column 'a' is numeric but line 9 holds 'twelve'"):
        build(source=f"csv:{write_csv(tmp_path, frame)}", target="y")


def test_csv_nan_policies(tmp_path):
    frame = table()
    frame.loc[[3, 10], "b"] = np.nan
    path = write_csv(tmp_path, frame)
    with pytest.raises(DataError, match=r"missing values in column\(s\) \['b'\] on lines 5, 12.*nan_policy"):
        build(source=f"csv:{path}", target="y")
    dropped = build(source=f"csv:{path}", target="y", nan_policy="drop")
    assert len(dropped.train) + len(dropped.val) + len(dropped.test) == 58
    assert any("dropped 2 row" in n for n in dropped.notes)
    imputed = build(source=f"csv:{path}", target="y", nan_policy="impute")
    assert len(imputed.train) + len(imputed.val) + len(imputed.test) == 60
    assert not imputed.train.x.isnan().any()


def test_csv_empty_label(tmp_path):
    frame = table()
    frame.loc[4, "y"] = np.nan
    with pytest.raises(DataError, match=r"label column 'y' is empty on line 6"):
        build(source=f"csv:{write_csv(tmp_path, frame)}", target="y")


def test_label_in_test_never_seen_in_train(tmp_path):
    frame = table()
    frame["split"] = ["train"] * 40 + ["val"] * 10 + ["test"] * 10
    frame.loc[55, "y"] = "w"
    with pytest.raises(DataError, match=r"label\(s\) \['w'\] appear in the test split but never in train"):
        build(source=f"csv:{write_csv(tmp_path, frame)}", target="y", split_column="split")


def test_split_column_values_are_checked(tmp_path):
    frame = table()
    frame["split"] = "training"
    with pytest.raises(DataError, match="holds \\['training'\\]; use only train, val and test"):
        build(source=f"csv:{write_csv(tmp_path, frame)}", target="y", split_column="split")


def test_too_few_examples_of_a_class(tmp_path):
    frame = table()
    frame = frame[(frame.y != "z") | (frame.index == 2)]  # a single 'z'
    with pytest.raises(DataError, match="fewer than 3 examples"):
        build(source=f"csv:{write_csv(tmp_path, frame)}", target="y")


# ---------------------------------------------------------------- image folders


def test_imagefolder_reads_classes_and_sizes(shapes_dir):
    bundle = build(source=f"imagefolder:{shapes_dir}")
    assert bundle.labels == ["circle", "square", "triangle"]
    assert bundle.input_shape == (3, 16, 16)
    x, y = bundle.train[[0, 1, 2]]
    assert x.shape == (3, 3, 16, 16) and y.shape == (3,)
    resized = build(source=f"imagefolder:{shapes_dir}", image={"size": 8, "channels": 1})
    assert resized.input_shape == (1, 8, 8)


def test_imagefolder_errors(tmp_path, shapes_dir):
    with pytest.raises(DataError, match="not found"):
        build(source=f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        build(source=f"imagefolder:{tmp_path / 'empty'}")
    (tmp_path / "one" / "cat").mkdir(parents=True)
    (tmp_path / "one" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"class folder .*cat holds no images"):
        build(source=f"imagefolder:{tmp_path / 'one'}")


def test_unreadable_image_is_named(tmp_path):
    from modelyard.data.synthetic import write_shapes_folder

    root = write_shapes_folder(tmp_path / "s", per_class=5, size=8)
    (root / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"1 unreadable image\(s\): .*circle/broken.png"):
        build(source=f"imagefolder:{root}")


def test_imagefolder_with_split_folders_checks_unseen_labels(tmp_path):
    for split, classes in (("train", ["a", "b"]), ("test", ["a", "c"])):
        for cls in classes:
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.new("L", (8, 8), color=i * 40).save(tmp_path / split / cls / f"{i}.png")
    with pytest.raises(DataError, match=r"\['c'\] appear in the test split but never in train"):
        build(source=f"imagefolder:{tmp_path}")


def test_augmentation_changes_training_batches_only(shapes_dir):
    bundle = build(source=f"imagefolder:{shapes_dir}", image={"augment": {"hflip": True, "random_crop": True}})
    import torch

    torch.manual_seed(0)
    a = bundle.train[[0, 1, 2, 3]][0]
    b = bundle.train[[0, 1, 2, 3]][0]
    assert not torch.equal(a, b)
    assert torch.equal(bundle.test[[0, 1]][0], bundle.test[[0, 1]][0])


def test_read_source_returns_raw_examples():
    raw = read_source("builtin:digits", data_cfg(source="builtin:digits"))
    assert raw.kind == "image" and raw.x.shape == (1797, 8, 8) and raw.x.max() == 16


def test_label_indices_name_the_labels_a_model_never_learnt():
    from modelyard.data.base import label_indices

    assert label_indices(np.array(["b", "a", "b"]), ["a", "b"], where="x.csv").tolist() == [1, 0, 1]
    with pytest.raises(DataError, match=r"new.csv holds label\(s\) \['c', 'd'\] the model never learnt"):
        label_indices(["a", "d", "c"], ["a", "b"], where="new.csv")
