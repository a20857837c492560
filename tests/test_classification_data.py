"""Text classification data: tokenizers, CSV / JSON Lines reading, splits, errors, and the sentiment sentences."""

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jupyter_llm.data import download, sentiment
from jupyter_llm.data.classification import encode_texts, text_classification
from jupyter_llm.data.sentiment import load_sentiment, sentiment_from_dir
from jupyter_llm.data.tokenizers import PaddedTokenizer, WordTokenizer, tokenizer_from_dict
from jupyter_llm.errors import ChecksumError, ConfigError, DataError, DatasetNotFound

SHIPPED = Path(__file__).resolve().parents[1] / "notebooks" / "data" / "sentiment_labelled"
FILES = [name for name, _ in sentiment.SENTIMENT_FILES.values()]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def balanced_csv(tmp_path, n_pos=60, n_neg=40, name="reviews.csv") -> Path:
    rows = ["text,label"]
    rows += [f"good film number {i},pos" for i in range(n_pos)]
    rows += [f"bad film number {i},neg" for i in range(n_neg)]
    return write(tmp_path / name, "\n".join(rows) + "\n")


# ------------------------------------------------------------------------------------------------- tokenizers
def test_word_tokenizer_round_trip_unknown_and_padding():
    tok = WordTokenizer.train(["Great phone!", "Bad phone.", "great, GREAT value"], max_vocab=100)
    assert tok.vocab[:2] == ["<pad>", "<unk>"]
    assert tok.vocab[2] == "great"  # most frequent first (3 times), then by count and alphabet
    ids = tok.encode("Great phone, don't buy!")
    assert ids.dtype == np.int32 and 0 not in ids
    assert tok.decode(ids) == "great phone , <unk> <unk> !"  # "don't" is one word, never seen: <unk>
    assert tok.decode(tok.encode("GREAT value!")) == "great value !"
    assert WordTokenizer.tokenize("It's 5 stars... WOW") == ["it's", "5", "stars", ".", ".", ".", "wow"]

    x = encode_texts(["great phone", "bad " * 10], tok, max_len=4)
    assert x.shape == (2, 4) and x.dtype == np.int32
    assert x[0].tolist() == [*tok.encode("great phone").tolist(), 0, 0]  # padded with 0 at the end
    assert x[1].tolist() == [tok.vocab.index("bad")] * 4  # truncated to max_len
    assert tok.decode(x[0]) == "great phone"  # padding is left out


def test_word_tokenizer_vocab_limit_determinism_and_serialisation():
    texts = ["a a a b b c", "d e"]
    tok = WordTokenizer.train(texts, max_vocab=2)
    assert tok.vocab == ["<pad>", "<unk>", "a", "b"] and tok.vocab_size == 4
    assert tok.encode("c").tolist() == [1]
    assert WordTokenizer.train(texts, max_vocab=2).vocab == tok.vocab
    record = json.loads(json.dumps(tok.to_dict()))
    assert record["kind"] == "word"
    for back in (WordTokenizer.from_dict(record), tokenizer_from_dict(record)):
        assert back.vocab == tok.vocab and back.encode("a b c").tolist() == tok.encode("a b c").tolist()
    with pytest.raises(DataError):
        WordTokenizer(["a", "b"])


def test_control_characters_are_not_tokens():
    assert WordTokenizer.tokenize("all of them \x96 a true masterpiece\x85") == [
        "all", "of", "them", "a", "true", "masterpiece"]


def test_char_tokenizer_is_shifted_to_keep_zero_for_padding(tmp_path):
    path = balanced_csv(tmp_path, 10, 10)
    ds = text_classification(path, tokenizer="char", max_len=32, val_fraction=0.0, test_fraction=0.2)
    tok = ds.meta["tokenizer"]
    assert isinstance(tok, PaddedTokenizer) and tok.vocab_size == tok.inner.vocab_size + 1
    ids = tok.encode("good film")
    assert ids.min() >= 1 and tok.decode(ids) == "good film"
    assert tok.decode(tok.encode("good Zfilm")) == "good film"  # a character never seen in training is skipped
    x, _ = ds.train
    assert x.dtype == np.int32 and x.shape[1] == 32 and (x[:, -1] == 0).all()  # short texts end in padding
    back = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert back.encode("bad film").tolist() == tok.encode("bad film").tolist()


def test_bpe_tokenizer_option(tmp_path):
    pytest.importorskip("tokenizers")
    ds = text_classification(balanced_csv(tmp_path, 20, 20), tokenizer="bpe", max_vocab=300, max_len=16)
    tok = ds.meta["tokenizer"]
    assert isinstance(tok, PaddedTokenizer) and tok.decode(tok.encode("good film 7")) == "good film 7"
    assert ds.train[0].min() >= 0 and (tok.encode("bad film") >= 1).all()


# ----------------------------------------------------------------------------------------------- reading files
def test_csv_with_string_labels_and_quoted_fields(tmp_path):
    path = write(tmp_path / "r.csv", 'id,label,text\n1,pos,"Loved it, really"\n2,neg,"Awful.\nTruly awful"\n'
                                     '3,neutral,Meh\n4,pos,Great\n5,neg,Bad\n6,neutral,Fine\n')
    ds = text_classification(path, val_fraction=0.0, test_fraction=0.0, max_len=8)
    assert ds.class_names == ("neg", "neutral", "pos") and ds.num_classes == 3 and ds.task == "classification"
    assert ds.name == "r" and ds.meta["max_len"] == 8 and ds.validation is None and ds.test is None
    x, y = ds.train
    assert x.shape == (6, 8) and x.dtype == np.int32 and y.dtype == np.int32
    by_text = dict(zip(ds.meta["texts"]["train"], y.tolist()))
    assert by_text["Loved it, really"] == 2 and by_text["Awful.\nTruly awful"] == 0 and by_text["Meh"] == 1


def test_tsv_jsonl_json_and_sep(tmp_path):
    tsv = write(tmp_path / "r.tsv", "sentence\tscore\nnice one, yes\t1\nnot nice\t0\ngood\t1\nbad\t0\n")
    ds = text_classification(tsv, text="sentence", label="score", val_fraction=0.0, test_fraction=0.0)
    assert ds.class_names == ("0", "1") and sorted(ds.train[1].tolist()) == [0, 0, 1, 1]

    lines = [{"text": "fine", "label": 3}, {"text": "great", "label": 5}, {"text": "okay", "label": 3.0},
             {"text": "superb", "label": 5}]
    jsonl = write(tmp_path / "r.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n\n")
    ds = text_classification(jsonl, val_fraction=0.0, test_fraction=0.0)
    assert ds.class_names == ("3", "5")  # integer labels kept in numeric order, mapped to 0..C-1
    assert dict(zip(ds.meta["texts"]["train"], ds.train[1].tolist())) == {"fine": 0, "great": 1, "okay": 0,
                                                                         "superb": 1}
    arr = write(tmp_path / "r.json", json.dumps([{"t": "up", "y": "b"}, {"t": "down", "y": "a"}]))
    assert text_classification(arr, text="t", label="y", val_fraction=0, test_fraction=0).class_names == ("a", "b")

    txt = write(tmp_path / "r.txt", "text;label\nyes;1\nno;0\n")
    assert text_classification(txt, sep=";", val_fraction=0, test_fraction=0).num_classes == 2


def test_stratified_deterministic_split_and_train_only_vocabulary(tmp_path):
    path = balanced_csv(tmp_path, n_pos=60, n_neg=40)
    ds = text_classification(path, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert ds.sizes() == {"train": 70, "validation": 10, "test": 20}
    for split, (neg, pos) in (("train", (28, 42)), ("validation", (4, 6)), ("test", (8, 12))):
        assert np.bincount(getattr(ds, split)[1]).tolist() == [neg, pos]  # each class cut in proportion
    again = text_classification(path, val_fraction=0.1, test_fraction=0.2, seed=3)
    for split in ("train", "validation", "test"):
        assert np.array_equal(getattr(ds, split)[0], getattr(again, split)[0])
        assert ds.meta["texts"][split] == again.meta["texts"][split]
    other = text_classification(path, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert ds.meta["texts"]["test"] != other.meta["texts"]["test"]
    # The vocabulary comes from the training texts only: a test sentence's own number is unknown.
    vocab = set(ds.meta["tokenizer"].vocab)
    train_numbers = {t.split()[-1] for t in ds.meta["texts"]["train"]}
    test_numbers = {t.split()[-1] for t in ds.meta["texts"]["test"]} - train_numbers
    assert test_numbers and not (test_numbers & vocab) and train_numbers <= vocab
    assert set(ds.meta["texts"]["train"]).isdisjoint(ds.meta["texts"]["test"])


# ---------------------------------------------------------------------------------------------------- errors
def test_error_missing_file(tmp_path):
    with pytest.raises(DatasetNotFound, match="no such file") as err:
        text_classification(tmp_path / "nope.csv")
    assert "nope.csv" in str(err.value)
    with pytest.raises(DatasetNotFound, match="folder"):
        text_classification(tmp_path)


def test_error_not_utf8(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\u00e9,1\nbad,0\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8.*line 2.*save the file as UTF-8") as err:
        text_classification(path)
    assert "latin.csv" in str(err.value)


def test_error_missing_column_lists_columns(tmp_path):
    path = write(tmp_path / "r.csv", "review,stars\nok,1\nno,0\n")
    with pytest.raises(DataError, match=r"no column 'text'.*\['review', 'stars'\].*text=") as err:
        text_classification(path)
    assert "r.csv" in str(err.value)
    with pytest.raises(DataError, match=r"no column 'label'.*\['review', 'stars'\]"):
        text_classification(path, text="review")
    jsonl = write(tmp_path / "r.jsonl", '{"body": "x", "y": 1}\n')
    with pytest.raises(DataError, match=r"no field 'text'.*\['body', 'y'\]"):
        text_classification(jsonl)


def test_error_empty_file_and_header_only(tmp_path):
    with pytest.raises(DataError, match="empty.csv.*is empty"):
        text_classification(write(tmp_path / "empty.csv", "\n  \n"))
    with pytest.raises(DataError, match="no rows"):
        text_classification(write(tmp_path / "head.csv", "text,label\n"))


def test_error_empty_text_or_missing_label_gives_line(tmp_path):
    path = write(tmp_path / "r.csv", "text,label\ngood,1\n  ,0\nbad,0\n")
    with pytest.raises(DataError, match=r"Line 3 of .*r\.csv.* empty text"):
        text_classification(path)
    path = write(tmp_path / "r2.csv", "text,label\ngood,1\n\nbad\n")
    with pytest.raises(DataError, match=r"Line 4 of .*r2\.csv.* no label"):
        text_classification(path)
    path = write(tmp_path / "r.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"Line 2 of .*r\.jsonl.* no label"):
        text_classification(path)
    path = write(tmp_path / "bad.jsonl", '{"text": "a", "label": 1}\nnot json\n')
    with pytest.raises(DataError, match=r"Line 2 of .*bad\.jsonl.* not a JSON object"):
        text_classification(path)


def test_error_single_class(tmp_path):
    path = write(tmp_path / "one.csv", "text,label\na,pos\nb,pos\n")
    with pytest.raises(DataError, match=r"one\.csv.*only one class \('pos'\).*at least two"):
        text_classification(path)


def test_error_unknown_format_and_bad_options(tmp_path):
    with pytest.raises(ConfigError, match=r"format of .*r\.xlsx.*\.csv, \.tsv or \.jsonl.*sep="):
        text_classification(write(tmp_path / "r.xlsx", "x"))
    path = balanced_csv(tmp_path, 5, 5)
    with pytest.raises(ConfigError, match="max_len"):
        text_classification(path, max_len=0)
    with pytest.raises(ConfigError, match="leaves nothing to train"):
        text_classification(path, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="Unknown tokenizer 'words'"):
        text_classification(path, tokenizer="words")
    with pytest.raises(ConfigError, match="single character"):
        text_classification(path, sep=",,")


# ----------------------------------------------------------------------------------------- sentiment sentences
def test_shipped_files_are_the_published_ones():
    for name, sha256 in sentiment.SENTIMENT_FILES.values():
        raw = (SHIPPED / name).read_bytes()
        assert download.file_hash(SHIPPED / name) == sha256
        assert raw.endswith(b"\n") and raw.count(b"\n") == 1000 and b"\r" not in raw


def test_sentiment_from_dir_shipped_files():
    ds = sentiment_from_dir(SHIPPED)
    assert ds.name == "sentiment" and ds.num_classes == 2 and ds.class_names == ("negative", "positive")
    assert sum(ds.sizes().values()) == 3000 and ds.sizes() == {"train": 2100, "validation": 300, "test": 600}
    y = np.concatenate([ds.train[1], ds.validation[1], ds.test[1]])
    assert np.bincount(y).tolist() == [1500, 1500]
    for split in ("train", "validation", "test"):
        x, labels = getattr(ds, split)
        assert x.shape == (len(labels), 64) and x.dtype == np.int32
        sources, counts = np.unique(ds.meta["source"][split], return_counts=True)
        assert sources.tolist() == ["amazon", "imdb", "yelp"] and len(set(counts.tolist())) == 1
        assert np.bincount(labels).tolist()[0] == len(labels) // 2  # balanced in every split
    assert ds.meta["tokenizer"].vocab_size == ds.meta["vocab_size"] > 1000
    only = sentiment_from_dir(SHIPPED, sources=["yelp"], max_len=16, test_fraction=0.5, val_fraction=0.0)
    assert sum(only.sizes().values()) == 1000 and only.train[0].shape[1] == 16


def test_sentiment_from_dir_checks_files(tmp_path):
    for name in FILES:
        shutil.copy(SHIPPED / name, tmp_path / name)
    edited = tmp_path / "yelp_labelled.txt"
    edited.write_bytes(edited.read_bytes().replace(b"Crust is not good.\t0", b"Crust is not good.\t1"))
    with pytest.raises(ChecksumError, match="yelp_labelled.txt.*verify=False"):
        sentiment_from_dir(tmp_path)
    assert sum(sentiment_from_dir(tmp_path, verify=False).sizes().values()) == 3000
    (tmp_path / "imdb_labelled.txt").unlink()
    with pytest.raises(DatasetNotFound, match="imdb_labelled.txt is not in"):
        sentiment_from_dir(tmp_path, verify=False)
    with pytest.raises(DatasetNotFound, match="not a folder"):
        sentiment_from_dir(tmp_path / "missing")
    with pytest.raises(ConfigError, match="Unknown sentiment source"):
        sentiment_from_dir(SHIPPED, sources=["twitter"])


def uci_zip(path: Path, corrupt: str | None = None) -> Path:
    """A zip laid out like the UCI archive, with the macOS metadata entries that must be ignored."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("sentiment labelled sentences/readme.txt", "Sentiment Labelled Sentences\n")
        for name in FILES:
            zf.writestr(f"__MACOSX/sentiment labelled sentences/._{name}", b"\x00\x05\x16\x07 metadata")
            raw = (SHIPPED / name).read_bytes()
            if name == corrupt:
                raw = raw[:-100]
            zf.writestr(f"sentiment labelled sentences/{name}", raw)
    return path


def test_load_sentiment_downloads_once_and_verifies(tmp_path):
    archive = uci_zip(tmp_path / "upstream.zip")
    cache = tmp_path / "cache"
    ds = load_sentiment(cache_dir=cache, urls=[archive.as_uri()], test_fraction=0.2, val_fraction=0.1)
    assert sum(ds.sizes().values()) == 3000 and ds.class_names == ("negative", "positive")
    assert (cache / sentiment.SENTIMENT_ZIP).is_file()
    for name in FILES:
        assert (cache / sentiment.SENTIMENT_DIR / name).read_bytes() == (SHIPPED / name).read_bytes()
    # Later calls use the verified cache: no download (the URL is unreachable).
    again = load_sentiment(cache_dir=cache, urls=[(tmp_path / "gone.zip").as_uri()])
    assert np.array_equal(again.test[0], ds.test[0])
    # The public entry point reaches the same loader.
    import jupyter_llm as jl

    assert jl.datasets.load("sentiment", cache_dir=cache).sizes() == ds.sizes()


def test_load_sentiment_rejects_a_corrupted_archive(tmp_path):
    archive = uci_zip(tmp_path / "upstream.zip", corrupt="imdb_labelled.txt")
    cache = tmp_path / "cache"
    imdb_sha256 = sentiment.SENTIMENT_FILES["imdb"][1]
    with pytest.raises(ChecksumError, match="imdb_labelled.txt.*expected sha256 " + imdb_sha256):
        load_sentiment(cache_dir=cache, urls=[archive.as_uri()])
    assert not (cache / sentiment.SENTIMENT_DIR / "imdb_labelled.txt").exists()  # nothing unverified is kept

    (cache / sentiment.SENTIMENT_ZIP).write_bytes(b"<html>not a zip</html>")
    with pytest.raises(ChecksumError, match="not a valid zip"):
        load_sentiment(cache_dir=cache, urls=[archive.as_uri()])
    assert not (cache / sentiment.SENTIMENT_ZIP).exists()  # removed, so the next call downloads again


def test_load_sentiment_without_network_says_how_to_fix(tmp_path):
    with pytest.raises(DatasetNotFound, match="Could not download.*sentiment_from_dir"):
        load_sentiment(cache_dir=tmp_path / "cache", urls=[(tmp_path / "missing.zip").as_uri()])
    assert not list((tmp_path / "cache").glob("*.part"))
