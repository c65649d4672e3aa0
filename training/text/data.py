"""Text sources, the vocabulary, the held-out split and the training windows.

Sources: ``text:PATH`` (a UTF-8 file, or every ``.txt`` file under a folder, each one document),
``fortunes`` (the fortune-cookie files of Debian's ``fortunes`` packages: entries separated by lines that
are just ``%``) and ``grammar`` (sentences from a tiny procedural grammar, for tests and demos). Documents
are joined with the end-of-text marker, which the model learns to predict at a document's end.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genserve.store import END_OF_TEXT_ID

DEFAULT_FORTUNES_PATH = Path("/usr/share/games/fortunes")
_FORTUNE_SEPARATOR = "%"
# Documents drawn from the grammar when no limit says otherwise: about 40k characters.
_GRAMMAR_DOCUMENTS = 800


@dataclass(frozen=True)
class TextCorpus:
    """Training and held-out documents and the vocabulary covering both (index = token id)."""

    name: str
    train_documents: list[str]
    held_out_documents: list[str]
    vocabulary: list[str]

    @property
    def index(self) -> dict[str, int]:
        return {char: i for i, char in enumerate(self.vocabulary) if i != END_OF_TEXT_ID}

    def ids(self, documents: list[str]) -> np.ndarray:
        """The id stream of `documents`: each one preceded by end-of-text, and one more at the very end."""
        index = self.index
        stream: list[int] = []
        for document in documents:
            stream.append(END_OF_TEXT_ID)
            stream.extend(index[char] for char in document)
        stream.append(END_OF_TEXT_ID)
        return np.asarray(stream, dtype=np.int32)

    @property
    def train_ids(self) -> np.ndarray:
        return self.ids(self.train_documents)

    @property
    def held_out_ids(self) -> np.ndarray:
        return self.ids(self.held_out_documents)


def load_corpus(
    dataset: str,
    *,
    data_path: str | None = None,
    held_out: float = 0.1,
    seed: int | None = 0,
    limit_chars: int | None = None,
    end_of_text: str = "\u241e",
) -> TextCorpus:
    """Read `dataset`, split off `held_out` of it, and build the vocabulary; ValueError says what is wrong."""
    documents = read_documents(dataset, data_path, seed)
    if limit_chars is not None:
        documents = _first_chars(documents, limit_chars)
    train, held = split_documents(documents, held_out, seed)
    characters = sorted({char for document in documents for char in document})
    if end_of_text in characters:
        raise ValueError(f"the text contains the end-of-text marker {end_of_text!r}; pick another one")
    vocabulary = [end_of_text, *characters]
    return TextCorpus(dataset, train, held, vocabulary)


def data_location(dataset: str, data_path: str | None) -> Path | None:
    """The file or folder a text dataset is read from (`data_path` in place of a spec's own path, which a
    published version keeps only as a file name); None for one the project generates."""
    if dataset.startswith("text:"):
        return Path(data_path) if data_path else Path(dataset.removeprefix("text:"))
    if dataset == "fortunes":
        return Path(data_path) if data_path else DEFAULT_FORTUNES_PATH
    return None


def read_documents(dataset: str, data_path: str | None, seed: int | None) -> list[str]:
    location = data_location(dataset, data_path)
    if dataset.startswith("text:") and location is not None:
        return _read_text_path(location)
    if dataset == "fortunes" and location is not None:
        return _read_fortunes(location)
    if dataset == "grammar":
        return grammar_documents(_GRAMMAR_DOCUMENTS, seed=0 if seed is None else seed)
    raise ValueError(f"unknown dataset {dataset!r}: use text:PATH, fortunes or grammar")


def split_documents(documents: list[str], held_out: float, seed: int | None) -> tuple[list[str], list[str]]:
    """A seeded share of whole documents (at least one) held out; a single document is split at a character."""
    documents = [document for document in documents if document]
    if not documents:
        raise ValueError("the dataset holds no text")
    if len(documents) == 1:
        joined = documents[0]
        cut = int(len(joined) * (1 - held_out))
        return [joined[:cut]], [joined[cut:]]
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    count = max(1, round(len(documents) * held_out))
    held = sorted(order[:count])
    kept = sorted(order[count:])
    return [documents[i] for i in kept], [documents[i] for i in held]


def windows(ids: np.ndarray, sequence_length: int) -> np.ndarray:
    """Non-overlapping windows of `sequence_length + 1` ids: inputs are [:-1], targets [1:]."""
    count = (len(ids) - 1) // sequence_length
    if count < 1:
        raise ValueError(f"the text is shorter than one window of {sequence_length + 1} characters")
    starts = np.arange(count) * sequence_length
    return np.stack([ids[start : start + sequence_length + 1] for start in starts])


def _read_text_path(path: Path) -> list[str]:
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise ValueError(f"no .txt files under {path}")
        return [file.read_text(encoding="utf-8") for file in files]
    if not path.is_file():
        raise ValueError(f"{path} is neither a file nor a folder")
    return [path.read_text(encoding="utf-8")]


def _read_fortunes(path: Path) -> list[str]:
    """Every fortune under `path` (a fortune file, or a folder of them; the binary .dat indexes are skipped)."""
    if path.is_dir():
        files = sorted(
            f
            for f in path.iterdir()
            if f.is_file() and f.suffix not in (".dat", ".u8") and not f.is_symlink()
        )
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(
            f"no fortunes at {path}: install Debian's fortunes packages or give the folder with --data"
        )
    fortunes: list[str] = []
    for file in files:
        text = file.read_text(encoding="utf-8", errors="replace")
        fortunes.extend(_split_fortunes(text))
    if not fortunes:
        raise ValueError(f"no fortunes found in {path}")
    return fortunes


def _split_fortunes(text: str) -> list[str]:
    entries: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip() == _FORTUNE_SEPARATOR:
            entries.append("\n".join(current).strip("\n"))
            current = []
        else:
            current.append(line)
    entries.append("\n".join(current).strip("\n"))
    return [entry for entry in entries if entry.strip()]


def _first_chars(documents: list[str], limit: int) -> list[str]:
    kept, total = [], 0
    for document in documents:
        if total >= limit:
            break
        kept.append(document[: limit - total])
        total += len(kept[-1])
    return kept


_SUBJECTS = ["the cat", "a dog", "the old man", "my friend", "a small bird", "the robot"]
_VERBS = ["sees", "likes", "follows", "paints", "finds", "forgets"]
_OBJECTS = ["the moon", "a red ball", "the river", "an apple", "the green door", "a quiet song"]
_ENDINGS = [".", "!", " today.", " again."]


def grammar_documents(count: int, *, seed: int = 0) -> list[str]:
    """`count` short documents of one to three sentences from a tiny grammar (reproducible from `seed`)."""
    rng = random.Random(seed)
    documents = []
    for _ in range(count):
        sentences = []
        for _ in range(rng.randint(1, 3)):
            sentence = (
                f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_ENDINGS)}"
            )
            sentences.append(sentence[0].upper() + sentence[1:])
        documents.append(" ".join(sentences))
    return documents
