"""Text sources, the held-out split, the id stream and the training windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genserve.store import END_OF_TEXT_ID
from training.text.data import grammar_documents, load_corpus, split_documents, windows


def test_fortunes_split_on_percent_lines_and_join_with_end_of_text(tmp_path: Path) -> None:
    folder = tmp_path / "fortunes"
    folder.mkdir()
    (folder / "wisdom").write_text("First one.\n%\nSecond,\non two lines.\n%\n\n%\nThird.\n")
    (folder / "wisdom.dat").write_bytes(b"\x00\x01binary index")
    corpus = load_corpus("fortunes", data_path=str(folder), held_out=0.1)
    documents = corpus.train_documents + corpus.held_out_documents
    assert sorted(documents) == ["First one.", "Second,\non two lines.", "Third."]
    ids = corpus.ids(["Fi", "r"])
    assert ids[0] == END_OF_TEXT_ID and ids[3] == END_OF_TEXT_ID and ids[-1] == END_OF_TEXT_ID
    assert len(ids) == 2 + 1 + 1 + 2


def test_missing_fortunes_say_where_to_point(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--data"):
        load_corpus("fortunes", data_path=str(tmp_path / "absent"))


def test_text_folder_reads_every_txt_file_as_a_document(tmp_path: Path) -> None:
    for index in range(12):
        (tmp_path / f"doc{index:02d}.txt").write_text(f"document number {index}")
    (tmp_path / "notes.md").write_text("ignored")
    corpus = load_corpus(f"text:{tmp_path}", held_out=0.25, seed=1)
    assert len(corpus.train_documents) == 9 and len(corpus.held_out_documents) == 3
    assert "#" not in corpus.vocabulary and corpus.vocabulary[0] == "\u241e"


def test_held_out_split_is_seeded_and_disjoint() -> None:
    documents = [f"doc {i}" for i in range(50)]
    first = split_documents(documents, 0.2, seed=3)
    assert first == split_documents(documents, 0.2, seed=3)
    train, held = first
    assert len(held) == 10 and not set(train) & set(held)
    assert split_documents(documents, 0.2, seed=4) != first


def test_a_single_document_is_split_at_a_character() -> None:
    train, held = split_documents(["x" * 100], 0.1, seed=0)
    assert len(train[0]) == 90 and len(held[0]) == 10


def test_windows_are_non_overlapping_and_one_longer_than_the_sequence() -> None:
    ids = np.arange(23, dtype=np.int32)
    chunks = windows(ids, 5)
    assert chunks.shape == (4, 6)
    assert chunks[1, 0] == chunks[0, -1] == 5


def test_grammar_is_reproducible() -> None:
    assert grammar_documents(5, seed=2) == grammar_documents(5, seed=2)
    assert grammar_documents(5, seed=2) != grammar_documents(5, seed=3)


def test_unknown_dataset_names_the_choices() -> None:
    with pytest.raises(ValueError, match="text:PATH, fortunes or grammar"):
        load_corpus("poetry")
