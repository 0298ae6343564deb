import pandas as pd
import pytest

from modelyard.config import load_config
from modelyard.data import build_data
from modelyard.data.synthetic import write_text_csv
from modelyard.data.text import TextPreprocessor, train_tokenizer
from modelyard.errors import DataError
from tests.conftest import tiny_config

TEXTS = ["Fast web server for static files.", "Émile's café: naïve résumé, 100% UTF-8 ✓", "tabs\tand  spaces"]


def data_cfg(**data):
    return load_config(tiny_config(data=data)).data


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_tokenizer_round_trip(kind):
    cfg = data_cfg(source="builtin:digits", tokenizer={"kind": kind, "vocab_size": 300, "max_length": 64}).tokenizer
    tok = train_tokenizer(TEXTS * 5, cfg)
    for text in TEXTS:
        enc = tok.encode(text)
        assert enc.ids[0] == tok.token_to_id("<cls>") and len(enc.ids) == 64
        decoded = tok.decode(enc.ids)  # special tokens are skipped
        assert decoded.strip() == text.strip() if kind == "bpe" else decoded == text


def test_saved_tokenizer_encodes_identically():
    cfg = data_cfg(source="builtin:digits", tokenizer={"vocab_size": 300, "max_length": 16})
    pre = TextPreprocessor(tokenizer=train_tokenizer(TEXTS, cfg.tokenizer), max_length=16, text_column=None)
    again = TextPreprocessor.from_json(pre.to_json())
    assert pre.transform(TEXTS).equal(again.transform(TEXTS))


def test_csv_text_column(tmp_path):
    path = write_text_csv(tmp_path / "t.csv")
    bundle = build_data(data_cfg(source=f"csv:{path}", text="description", target="topic",
                                 tokenizer={"vocab_size": 100, "max_length": 12}), seed=0)
    assert bundle.labels == ["garden", "kitchen", "network"]
    assert bundle.input_shape == (12,) and bundle.model_inputs["pad_id"] == 0
    assert bundle.train[[0, 1]][0].shape == (2, 12)


def test_builtin_debian_sections_ships_with_the_package():
    from modelyard.data import read_source

    raw = read_source("builtin:debian-sections", data_cfg(source="builtin:debian-sections"))
    assert raw.kind == "text" and len(set(raw.y)) == 16
    assert [int((raw.split == s).sum()) for s in ("train", "val", "test")] == [8148, 1179, 1246]


def test_text_errors(tmp_path):
    frame = pd.read_csv(write_text_csv(tmp_path / "t.csv"))
    with pytest.raises(DataError, match="no column 'descripton' for data.text. Did you mean 'description'"):
        build_data(data_cfg(source=f"csv:{tmp_path / 't.csv'}", text="descripton", target="topic"), seed=0)
    frame.loc[4, "description"] = "   "
    frame.to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(DataError, match=r"empty text or label, on line\(s\) 6"):
        build_data(data_cfg(source=f"csv:{tmp_path / 'empty.csv'}", text="description", target="topic"), seed=0)
    dropped = build_data(data_cfg(source=f"csv:{tmp_path / 'empty.csv'}", text="description", target="topic",
                                  nan_policy="drop"), seed=0)
    assert any("dropped 1 row" in n for n in dropped.notes)
    lines = (tmp_path / "t.csv").read_bytes().split(b"\n")
    lines[9] = lines[9].replace(b".", b" caf\xe9.", 1)  # a Latin-1 byte on line 10
    (tmp_path / "latin1.csv").write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match="line 10 is not valid UTF-8"):
        build_data(data_cfg(source=f"csv:{tmp_path / 'latin1.csv'}", text="description", target="topic"), seed=0)


def test_text_split_column_is_checked(tmp_path):
    frame = pd.read_csv(write_text_csv(tmp_path / "t.csv"))
    with pytest.raises(DataError, match="no column 'part' for data.split_column"):
        build_data(data_cfg(source=f"csv:{tmp_path / 't.csv'}", text="description", target="topic",
                            split_column="part"), seed=0)
    frame["part"] = "training"
    frame.to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(DataError, match=r"holds \['training'\]; use only train, val and test"):
        build_data(data_cfg(source=f"csv:{tmp_path / 's.csv'}", text="description", target="topic",
                            split_column="part"), seed=0)


def test_long_texts_are_truncated_and_counted(tmp_path):
    path = write_text_csv(tmp_path / "t.csv")
    bundle = build_data(data_cfg(source=f"csv:{path}", text="description", target="topic",
                                 tokenizer={"kind": "char", "max_length": 8}), seed=0)
    assert any("longer than 8 tokens and were truncated" in n for n in bundle.notes)
