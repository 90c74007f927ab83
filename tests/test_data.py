import gzip
import json

import numpy as np
import pytest

from kgemma.data import Reviews
from kgemma.data import drop_overlap
from kgemma.data import duplicate_groups
from kgemma.data import load_imdb
from kgemma.data import overlapping_indices
from kgemma.data import read_aclimdb
from kgemma.data import read_csv
from kgemma.data import read_jsonl
from kgemma.data import read_reviews
from kgemma.data import stratified_sample
from kgemma.data import train_validation_split


def test_jsonl_keeps_text_label_id_and_rating(tmp_path):
    path = tmp_path / "r.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"text": "Great.", "label": 1, "id": 7, "rating": 9}) + "\n\n")
        f.write(json.dumps({"text": "Bad.", "label": "negative", "id": 8, "rating": 2}) + "\n")
    reviews = read_jsonl(path)
    assert reviews.texts == ["Great.", "Bad."]
    assert reviews.labels.tolist() == [1, 0]
    assert reviews.ids == ["7", "8"] and reviews.ratings.tolist() == [9, 2]


def test_csv_and_tsv_with_custom_fields(tmp_path):
    csv_path = tmp_path / "r.csv"
    csv_path.write_text('review,sentiment\n"Great, really.",positive\n"Two\nlines",neg\n')
    reviews = read_csv(csv_path, text_field="review", label_field="sentiment")
    assert reviews.texts == ["Great, really.", "Two\nlines"] and reviews.labels.tolist() == [1, 0]
    tsv_path = tmp_path / "contrast.tsv"
    tsv_path.write_text("Sentiment\tText\nPositive\tLoved it.\nNegative\tHated it.\n")
    reviews = read_reviews(tsv_path, text_field="Text", label_field="Sentiment")
    assert reviews.labels.tolist() == [1, 0]
    assert (reviews.ratings == -1).all()


def test_aclimdb_layout_keeps_ratings(tmp_path):
    for split in ("train", "test"):
        for folder, rating in (("pos", 9), ("neg", 3)):
            (tmp_path / "aclImdb" / split / folder).mkdir(parents=True)
            for i in (10, 2):
                (tmp_path / "aclImdb" / split / folder / f"{i}_{rating}.txt").write_text(f"{folder} {i}<br />x")
    reviews = read_aclimdb(tmp_path / "aclImdb", "test")
    assert reviews.ids == ["test/neg/2", "test/neg/10", "test/pos/2", "test/pos/10"]
    assert reviews.labels.tolist() == [0, 0, 1, 1] and reviews.ratings.tolist() == [3, 3, 9, 9]
    assert len(load_imdb("train", tmp_path)) == 4  # the folder that holds aclImdb/


def test_load_imdb_reads_a_jsonl_folder(tmp_path):
    with gzip.open(tmp_path / "test.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "x", "label": 0}) + "\n")
    assert len(load_imdb("test", tmp_path)) == 1
    with pytest.raises(FileNotFoundError, match="neither an aclImdb/train folder nor a train.jsonl"):
        load_imdb("train", tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        load_imdb("validation", tmp_path)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "holds no reviews"),
        (b'{"text": "x", "label": "maybe"}\n', r"line 1: unknown label 'maybe'"),
        (b'{"text": "x", "label": 0}\n{"body": "y", "label": 1}\n', r"line 2: no 'text' field"),
        (b'{"text": "x", "label": 0}\n{"text": "caf\xe9", "label": 1}\n', r"line 2: not valid UTF-8"),
        (b'{"text": "x", "label": 0\n', r"line 1: not valid JSON"),
        (b'{"text": "x", "label": 5}\n', r"unknown label 5"),
    ],
)
def test_bad_jsonl_files_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_jsonl(path)
    assert "bad.jsonl" in str(info.value)


def test_bad_csv_and_missing_files(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("body,label\nx,1\n")
    with pytest.raises(ValueError, match=r"no column \['text'\]"):
        read_csv(path)
    with pytest.raises(FileNotFoundError, match="Data file not found"):
        read_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="unknown data file type"):
        read_reviews(tmp_path / "reviews.parquet")


def reviews_of(n, positive_share=0.5):
    labels = (np.arange(n) < n * positive_share).astype(int)
    return Reviews([f"review {i}" for i in range(n)], labels)


def test_split_is_stratified_seeded_and_disjoint():
    reviews = reviews_of(200, positive_share=0.3)
    train, validation = train_validation_split(reviews, 0.1, seed=4)
    assert len(train) == 180 and len(validation) == 20
    assert validation.label_counts() == {"negative": 14, "positive": 6}
    assert not set(train.ids) & set(validation.ids)
    again, _ = train_validation_split(reviews, 0.1, seed=4)
    assert again.ids == train.ids
    other, _ = train_validation_split(reviews, 0.1, seed=5)
    assert other.ids != train.ids


def test_stratified_sample():
    reviews = reviews_of(1000, positive_share=0.5)
    sample = stratified_sample(reviews, 100, seed=1)
    assert sample.label_counts() == {"negative": 50, "positive": 50}
    assert stratified_sample(reviews, 100, seed=1).ids == sample.ids
    assert len(stratified_sample(reviews, 5000)) == 1000


def test_duplicates_and_overlap_use_normalized_text():
    train = Reviews(["Great film!", "great  FILM!", "Unique.", "Seen in test<br />too"], [1, 1, 0, 0])
    test = Reviews(["Seen in test too", "Other."], [0, 0])
    assert duplicate_groups(train) == [[0, 1]]
    assert overlapping_indices(train, test) == [3]
    assert drop_overlap(train, test).texts == ["Great film!", "great  FILM!", "Unique."]
