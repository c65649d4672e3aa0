"""The model-store contract shared by `training/` (writer) and `app/` (reader).

Layout::

    <store>/<name>/labels.json           optional: {"stable": 3, "canary": 4}, names for versions
    <store>/<name>/<version>/            version: a positive integer, never reused
        saved_model.pb, variables/       TF-Serving-compatible SavedModel
        genserve.json                    ModelMetadata
        evaluation.json                  EvaluationRecord (optional, written later)
        COMPLETE                         written last; versions without it are ignored

A version folder holding a SavedModel alone (TensorFlow Serving's layout) is a bare version: complete once
nothing in it has changed for `BARE_VERSION_SETTLE_S`, and served with metadata the service infers.

A version folder holds regular files and folders only: the service refuses a SavedModel holding a named pipe,
socket or device (TensorFlow's open() of one would wait forever) and reads the store's own files through
`read_regular_file`, which never waits.

The SavedModel's ``serving_default`` signature takes ``z`` float32 ``[None, latent_dim]``
(plus ``label`` int32 ``[None]`` for conditional models) and returns ``images`` uint8
``[None, H, W, C]``. Conditional models may add two signatures for blending classes:
``from_embedding`` takes ``z`` and ``label_embedding`` float32 ``[None, E]`` (a point in the label
embedding space) and returns ``images``; ``label_embeddings`` takes nothing and returns the embedding
table, ``label_embeddings`` float32 ``[num_classes, E]``. VAEs add ``encode``: ``images`` uint8
``[None, H, W, C]`` to ``z_mean`` and ``z_log_var`` float32 ``[None, latent_dim]`` (the approximate
posterior; ``z_mean`` is the image's latent, and ``serving_default`` decodes it).

Text generators (``kind="char-rnn"``, with ``ModelMetadata.text``) are character-level recurrent models
with three signatures. ``serving_default`` samples in the graph, as TensorFlow Serving calls it:
``prompt`` string ``[]``, ``max_new_tokens`` int32 ``[]``, ``temperature`` float32 ``[]`` (0 is greedy)
and ``seed`` int64 ``[]`` to ``text`` string ``[]``, the continuation only. ``step`` advances a batch
by one token: ``token_ids`` int32 ``[B]`` and ``state`` float32 ``[B, state_size]`` to ``logits``
float32 ``[B, vocabulary_size]`` (the next token's) and ``state`` (the new one); ``initial_state``
takes ``batch_size`` int32 ``[]`` and returns the zero ``state``. Token ids index
``TextInfo.vocabulary``; id ``END_OF_TEXT_ID`` is the end-of-text marker, which separates documents in
training and is fed first, before the prompt, so generation starts as a document does. Their
``evaluation.json`` is a ``TextEvaluationRecord`` (held-out bits per character).

Sound generators (``kind="specgan"``, with ``ModelMetadata.audio``) draw a spectrogram and turn it into sound
inside the graph: ``serving_default`` takes ``z`` float32 ``[None, latent_dim]`` (plus ``label`` int32 ``[None]``
when conditional) and returns ``audio`` float32 ``[None, samples]``, mono waveforms in [-1, 1] at
``AudioInfo.sample_rate``.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

SIGNATURE_NAME = "serving_default"
LATENT_INPUT = "z"
LABEL_INPUT = "label"
IMAGES_OUTPUT = "images"
FROM_EMBEDDING_SIGNATURE = "from_embedding"
LABEL_EMBEDDING_INPUT = "label_embedding"
LABEL_EMBEDDINGS_SIGNATURE = "label_embeddings"
LABEL_EMBEDDINGS_OUTPUT = "label_embeddings"
ENCODE_SIGNATURE = "encode"
IMAGES_INPUT = "images"
LATENT_MEAN_OUTPUT = "z_mean"
LATENT_LOG_VAR_OUTPUT = "z_log_var"
STEP_SIGNATURE = "step"
INITIAL_STATE_SIGNATURE = "initial_state"
TOKEN_IDS_INPUT = "token_ids"
STATE_INPUT = "state"
STATE_OUTPUT = "state"
LOGITS_OUTPUT = "logits"
BATCH_SIZE_INPUT = "batch_size"
# Reads whole prompts in one call: token_ids [B, T] (rows padded past their lengths [B]) and a start state [B, S]
# -> the logits after each row's last token and the state there.
PREFILL_SIGNATURE = "prefill"
LENGTHS_INPUT = "lengths"
PROMPT_INPUT = "prompt"
MAX_NEW_TOKENS_INPUT = "max_new_tokens"
TEMPERATURE_INPUT = "temperature"
SEED_INPUT = "seed"
TEXT_OUTPUT = "text"
AUDIO_OUTPUT = "audio"
END_OF_TEXT_ID = 0
METADATA_FILE = "genserve.json"
EVALUATION_FILE = "evaluation.json"
LABELS_FILE = "labels.json"
COMPLETE_MARKER = "COMPLETE"
SAVED_MODEL_FILE = "saved_model.pb"
# How long a bare SavedModel's folder must stay unchanged before it is served (a copy into the store finishing).
BARE_VERSION_SETTLE_S = 2.0
TEMP_PREFIX = ".tmp-"
FORMAT_VERSION = 1
# The largest JSON file of the store (metadata with its vocabulary and training details, evaluation, labels).
MAX_JSON_BYTES = 16 * 1024 * 1024
# Opening a store file never waits: on a named pipe swapped in after the type check, nor on a terminal.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
_READ_CHUNK_BYTES = 1024 * 1024
# What a version folder holds beside its SavedModel.
_STORE_FILES = frozenset({METADATA_FILE, EVALUATION_FILE, COMPLETE_MARKER})

MODEL_NAME_PATTERN = r"[a-z0-9][a-z0-9._-]*"
LABEL_PATTERN = r"[a-z][a-z0-9_-]*"
_LABEL_RE = re.compile(LABEL_PATTERN)
_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)
_MAX_NAME_LENGTH = 64
# Version numbers are canonical positive decimals (no sign, no leading zero); nine digits is plenty.
_VERSION_RE = re.compile(r"[1-9][0-9]{0,8}")

ModelKind = Literal["dcgan", "cdcgan", "vae", "char-rnn", "specgan"]
VersionSource = Literal["trained", "imported", "inferred"]
TEXT_KINDS: tuple[ModelKind, ...] = ("char-rnn",)
GAN_KINDS: tuple[ModelKind, ...] = ("dcgan", "cdcgan")
IMAGE_KINDS: tuple[ModelKind, ...] = (*GAN_KINDS, "vae")
AUDIO_KINDS: tuple[ModelKind, ...] = ("specgan",)
# Kinds whose latents a caller may scale (generators trained adversarially).
_SCALABLE_KINDS: tuple[ModelKind, ...] = (*GAN_KINDS, *AUDIO_KINDS)
# Kinds that take a class label when the version has class names.
_CONDITIONAL_KINDS: tuple[ModelKind, ...] = ("cdcgan", *AUDIO_KINDS)


def check_latent_scale(scale: float, kind: str) -> None:
    """A positive, finite `ModelMetadata.latent_scale`, other than 1 only for a GAN `kind`."""
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0.0 < scale < math.inf:
        raise ValueError(f"latent_scale must be a positive number, got {scale!r}")
    if scale != 1.0:
        check_scalable(kind)


def check_scalable(kind: str) -> None:
    """Refuse a latent scale for a model `kind` whose latents must stay as trained."""
    if kind not in _SCALABLE_KINDS:
        raise ValueError(
            f"latent_scale only applies to GANs ({', '.join(_SCALABLE_KINDS)}), not to {kind!r}: a VAE's encoder "
            "shares its latents"
        )


class TextInfo(BaseModel):
    """What a text generator reads and writes: its vocabulary (index = token id) and its state size."""

    vocabulary: list[str] = Field(min_length=2)
    state_size: int = Field(gt=0)
    end_of_text: str = "\u241e"  # shown for END_OF_TEXT_ID; never a character of the training text
    cell: str = "gru"
    layers: int = Field(1, gt=0)
    units: int = Field(gt=0)
    sequence_length: int = Field(gt=0)


class AudioInfo(BaseModel):
    """What a sound generator answers: mono clips of `samples` samples at `sample_rate` Hz, drawn as spectrograms
    of `spectrogram_shape` (frames, frequency bins) and turned into sound in the graph."""

    sample_rate: int = Field(gt=0)
    samples: int = Field(gt=0)
    spectrogram_shape: tuple[int, int]

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


class ModelMetadata(BaseModel):
    """What a published version is: enough to serve it without inspecting the graph."""

    format_version: int = FORMAT_VERSION
    name: str
    kind: ModelKind
    # Image generators need the three image fields; text generators leave them at 0 and fill `text`.
    latent_dim: int = Field(0, ge=0)
    # The spread the generator samples its latents at: callers send N(0, I) latents and the graph multiplies
    # them by this before the generator (1 is the prior it was trained with; GANs often do best a little above).
    latent_scale: float = 1.0
    image_shape: tuple[int, int, int] = (0, 0, 0)
    channels: int = Field(0, ge=0)
    text: TextInfo | None = None
    audio: AudioInfo | None = None
    class_names: list[str] | None = None
    dataset: str
    training_config: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(ge=0)
    seed: int | None = None
    created: str = Field(default_factory=lambda: utc_now())
    framework_versions: dict[str, str] = Field(default_factory=dict)
    # What the training cost (wall time, images/s, whether a time budget ended it); empty if not recorded.
    training_summary: dict[str, Any] = Field(default_factory=dict)
    # Where the version came from: trained by genserve, imported from a model made elsewhere
    # (`python -m training import`), or inferred by the service from a bare SavedModel; `origin` says from what
    # (the source file's name and sha256, its inputs and output, the output range and what was inferred).
    source: VersionSource = "trained"
    origin: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_kind_fields(self) -> ModelMetadata:
        if self.is_text:
            if self.text is None:
                raise ValueError(f"a {self.kind} model needs `text` (vocabulary and state size)")
        elif self.is_audio:
            if self.audio is None or self.latent_dim < 1:
                raise ValueError(
                    f"a {self.kind} model needs `audio` (sample rate and length) and a latent_dim"
                )
        elif self.latent_dim < 1 or self.channels < 1 or min(self.image_shape) < 1:
            raise ValueError(f"a {self.kind} model needs a positive latent_dim, image_shape and channels")
        check_latent_scale(self.latent_scale, self.kind)
        return self

    @property
    def is_text(self) -> bool:
        """Whether this version generates text (the `step` and `initial_state` signatures) rather than images."""
        return self.kind in TEXT_KINDS

    @property
    def is_audio(self) -> bool:
        """Whether this version generates sound (`audio` waveforms from latents) rather than images or text."""
        return self.kind in AUDIO_KINDS

    @property
    def is_image(self) -> bool:
        """Whether this version generates images (`images` from latents)."""
        return self.kind in IMAGE_KINDS

    @property
    def conditional(self) -> bool:
        return self.class_names is not None and self.kind in _CONDITIONAL_KINDS

    @property
    def has_encoder(self) -> bool:
        """Whether the SavedModel carries the `encode` signature (VAEs)."""
        return self.kind == "vae"


class EvaluationRecord(BaseModel):
    """Sample-quality numbers for one version, computed after publication."""

    dataset: str
    num_samples: int
    fid: float
    inception_score: float
    real_fid: float | None = None
    real_inception_score: float | None = None
    classifier_accuracy: float | None = None
    created: str = Field(default_factory=lambda: utc_now())
    details: dict[str, Any] = Field(default_factory=dict)


class TextEvaluationRecord(BaseModel):
    """Held-out bits per character of a text generator, with the baselines' numbers in `details`."""

    dataset: str
    num_samples: int  # held-out characters scored
    bits_per_char: float
    created: str = Field(default_factory=lambda: utc_now())
    details: dict[str, Any] = Field(default_factory=dict)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def is_model_name(name: str) -> bool:
    """Whether `name` is a safe model name: 1-64 characters matching MODEL_NAME_PATTERN, nothing more."""
    return len(name) <= _MAX_NAME_LENGTH and _MODEL_NAME_RE.fullmatch(name) is not None


def is_label(name: str) -> bool:
    """Whether `name` can name a version (e.g. stable, canary): LABEL_PATTERN, at most 64 characters."""
    return len(name) <= _MAX_NAME_LENGTH and _LABEL_RE.fullmatch(name) is not None and name != "latest"


def parse_version_name(name: str) -> int | None:
    """The version number a folder or field `name` stands for ("3" -> 3), or None if it names none.

    Only canonical ASCII decimals count: "03", "+3", "³" or a thousand digits are not version numbers.
    """
    return int(name) if _VERSION_RE.fullmatch(name) else None


def validate_model_name(name: str) -> str:
    """Return `name` if it is a safe model name, else raise ValueError saying what is allowed."""
    if not is_model_name(name):
        raise ValueError(
            f"invalid model name {name!r}: use 1-{_MAX_NAME_LENGTH} characters matching {MODEL_NAME_PATTERN}"
        )
    return name


def model_dir(store: Path, name: str) -> Path:
    return Path(store) / validate_model_name(name)


def version_dir(store: Path, name: str, version: int) -> Path:
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    return model_dir(store, name) / str(version)


def is_complete(path: Path) -> bool:
    """Whether a version folder is ready to serve: its completion marker is written, or it is a bare SavedModel
    (TensorFlow Serving's layout) that nothing has changed for `BARE_VERSION_SETTLE_S`."""
    return (path / COMPLETE_MARKER).is_file() or is_settled_bare_version(path)


def is_bare_version(path: Path) -> bool:
    """Whether a version folder holds a SavedModel alone: no metadata and no completion marker of its own."""
    return (
        (path / SAVED_MODEL_FILE).is_file()
        and not (path / METADATA_FILE).exists()
        and not (path / COMPLETE_MARKER).exists()
    )


def is_settled_bare_version(path: Path, now: float | None = None) -> bool:
    """A bare version (`is_bare_version`) whose files all last changed at least `BARE_VERSION_SETTLE_S` ago.

    A copy in progress keeps changing the folder; the change time (not the modification time, which a copy
    may preserve from the source) says when it stopped.
    """
    if not is_bare_version(path):
        return False
    try:
        changed = max(entry.lstat().st_ctime for entry in [path, *path.rglob("*")])
    except OSError:
        return False
    return (time.time() if now is None else now) - changed >= BARE_VERSION_SETTLE_S


@dataclass(frozen=True)
class SkippedEntry:
    """A folder in the store that names no model or version; `path` is relative to the store."""

    path: str
    reason: str


@dataclass(frozen=True)
class StoreScan:
    """What a store holds: each model's complete versions (oldest first), and the folders that were skipped."""

    models: dict[str, list[int]]
    skipped: list[SkippedEntry]


def scan_store(store: Path) -> StoreScan:
    """Every model with at least one complete version, skipping (and reporting) folders that name nothing.

    Raises OSError only when the store itself cannot be listed; an unreadable model folder is skipped.
    """
    root = Path(store)
    models: dict[str, list[int]] = {}
    skipped: list[SkippedEntry] = []
    for child in sorted(root.iterdir()):
        if _is_private(child.name) or not child.is_dir():
            continue
        if not is_model_name(child.name):
            skipped.append(
                SkippedEntry(_shown(child.name), f"not a model name ({MODEL_NAME_PATTERN}, at most 64)")
            )
            continue
        try:
            versions = _version_folders(child, skipped)
        except OSError as error:
            skipped.append(SkippedEntry(child.name, f"unreadable ({error.strerror or type(error).__name__})"))
            continue
        complete = [version for version in versions if is_complete(child / str(version))]
        if complete:
            models[child.name] = complete
    return StoreScan(models, skipped)


def _version_folders(folder: Path, skipped: list[SkippedEntry]) -> list[int]:
    """Numbered version folders of a model folder, complete or not, sorted; other folders go to `skipped`."""
    versions = []
    for child in folder.iterdir():
        if _is_private(child.name) or not child.is_dir():
            continue
        version = parse_version_name(child.name)
        if version is None:
            skipped.append(SkippedEntry(f"{folder.name}/{_shown(child.name)}", "not a version number"))
        else:
            versions.append(version)
    return sorted(versions)


def _is_private(name: str) -> bool:
    """Hidden entries and staging folders of a publication in progress: never models or versions."""
    return name.startswith(".")


def _shown(name: str) -> str:
    """A folder name as logs may show it: printable, and short even if the name is not."""
    text = name.encode("unicode_escape").decode("ascii")
    return text if len(text) <= _MAX_NAME_LENGTH + 8 else text[:_MAX_NAME_LENGTH] + "…"


def list_versions(store: Path, name: str) -> list[int]:
    """Complete versions of a model, oldest first."""
    folder = model_dir(store, name)
    if not folder.is_dir():
        return []
    return [v for v in _version_folders(folder, []) if is_complete(folder / str(v))]


def latest_version(store: Path, name: str) -> int | None:
    versions = list_versions(store, name)
    return versions[-1] if versions else None


def list_models(store: Path) -> list[str]:
    """Names of models that have at least one complete version, sorted."""
    root = Path(store)
    if not root.is_dir():
        return []
    return sorted(scan_store(root).models)


class StoreFileError(ValueError):
    """A store entry that cannot be read safely: not a regular file (a named pipe, socket or device, which an
    open() would wait on or act on), or larger than its limit. The message names the entry."""


def read_regular_file(file: Path, max_bytes: int) -> bytes:
    """The bytes of `file`, a regular file (or a link to one) of at most `max_bytes`; never waits on what it is.

    The type is checked before opening, since opening a named pipe waits for a writer, and again on the file
    opened non-blocking, so a pipe swapped in between is refused instead of waited on. FileNotFoundError when it
    is missing, StoreFileError when it is not a regular file or is too large.
    """
    _check_regular_file(file, os.stat(file).st_mode)
    descriptor = os.open(file, _OPEN_FLAGS)
    try:
        _check_regular_file(file, os.fstat(descriptor).st_mode)
        chunks: list[bytes] = []
        read = 0
        while chunk := os.read(descriptor, _READ_CHUNK_BYTES):
            read += len(chunk)
            if read > max_bytes:
                raise StoreFileError(f"{file} is larger than {max_bytes} bytes")
            chunks.append(chunk)
    finally:
        os.close(descriptor)
    return b"".join(chunks)


def check_saved_model_files(folder: Path) -> None:
    """Refuse a version folder whose SavedModel holds anything but regular files and folders (links are followed),
    before TensorFlow's reads, which would wait on a named pipe or device, open it; StoreFileError names the first
    such entry. The store's own files are left out: they are read through `read_regular_file`."""
    root = Path(folder)
    pending = [root]
    seen: set[tuple[int, int]] = set()
    while pending:
        current = pending.pop()
        info = current.stat()
        if (info.st_dev, info.st_ino) in seen:  # a link back up the tree
            continue
        seen.add((info.st_dev, info.st_ino))
        with os.scandir(current) as entries:
            for entry in entries:
                if current == root and entry.name in _STORE_FILES:
                    continue
                mode = entry.stat().st_mode
                if stat.S_ISDIR(mode):
                    pending.append(Path(entry.path))
                elif not stat.S_ISREG(mode):
                    raise StoreFileError(f"{entry.path} is {_file_type(mode)}, not a regular file or folder")


def _check_regular_file(file: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise StoreFileError(f"{file} is {_file_type(mode)}, not a regular file")


def _file_type(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "of an unknown type"


def _read_optional_json(file: Path) -> bytes | None:
    """An optional JSON file's bytes, or None when there is none."""
    try:
        return read_regular_file(file, MAX_JSON_BYTES)
    except FileNotFoundError:
        return None


def read_labels(store: Path, name: str) -> dict[str, int]:
    """Version labels of a model (e.g. stable, canary); ValueError if the file is malformed or not a file."""
    file = model_dir(store, name) / LABELS_FILE
    data = _read_optional_json(file)
    if data is None:
        return {}
    try:
        raw = json.loads(data)
    except json.JSONDecodeError as error:
        raise ValueError(f"{file} is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{file} must map label names to version numbers")
    labels: dict[str, int] = {}
    for label, version in raw.items():
        if not is_label(str(label)):
            raise ValueError(f"{file}: label {label!r} must match {LABEL_PATTERN} and not be 'latest'")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"{file}: label {label!r} must name a positive integer version, got {version!r}")
        labels[str(label)] = version
    return labels


def write_labels(store: Path, name: str, labels: dict[str, int]) -> None:
    write_json_atomic(model_dir(store, name) / LABELS_FILE, dict(labels))


def next_version(store: Path, name: str) -> int:
    """One above every numbered folder, complete or not, so no version number is ever reused."""
    folder = model_dir(store, name)
    existing = _version_folders(folder, []) if folder.is_dir() else []
    return (existing[-1] + 1) if existing else 1


def read_metadata(path: Path) -> ModelMetadata:
    return ModelMetadata.model_validate_json(read_regular_file(Path(path) / METADATA_FILE, MAX_JSON_BYTES))


def read_evaluation(path: Path) -> EvaluationRecord | None:
    data = _read_optional_json(Path(path) / EVALUATION_FILE)
    return None if data is None else EvaluationRecord.model_validate_json(data)


def _temporary_path(folder: Path) -> Path:
    """A fresh name in `folder` for a file or folder on its way to its final name. Made with open() or mkdir()
    rather than tempfile's calls, so the umask sets its mode as for any new file: tempfile makes them private
    (0600, 0700), which would keep a store from the other users it is published for (an image's service user)."""
    return Path(folder) / f"{TEMP_PREFIX}{secrets.token_hex(8)}"


def write_json_atomic(file: Path, payload: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    file = Path(file)
    tmp_name = _temporary_path(file.parent)
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, file)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def read_text_evaluation(path: Path) -> TextEvaluationRecord | None:
    data = _read_optional_json(Path(path) / EVALUATION_FILE)
    return None if data is None else TextEvaluationRecord.model_validate_json(data)


def write_evaluation(path: Path, record: EvaluationRecord | TextEvaluationRecord) -> None:
    write_json_atomic(Path(path) / EVALUATION_FILE, record.model_dump(mode="json"))


def publish_version(
    store: Path,
    metadata: ModelMetadata,
    write_model: Callable[[Path], None],
) -> Path:
    """Publish a new version atomically and return its folder.

    `write_model(folder)` writes the SavedModel into a temporary folder inside the model's
    folder; it is then renamed to the next free version number, and the completion marker is
    written last. An existing version is never touched.
    """
    folder = model_dir(store, metadata.name)
    folder.mkdir(parents=True, exist_ok=True)
    staging = _temporary_path(folder)
    staging.mkdir()
    try:
        write_model(staging)
        write_json_atomic(staging / METADATA_FILE, metadata.model_dump(mode="json"))
        target = _rename_to_next_version(staging, metadata.name, Path(store))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (target / COMPLETE_MARKER).write_text(utc_now() + "\n")
    return target


def _rename_to_next_version(staging: Path, name: str, store: Path) -> Path:
    for _ in range(100):
        target = version_dir(store, name, next_version(store, name))
        try:
            # mkdir claims the number; a concurrent publisher that lost the race moves on.
            target.mkdir()
        except FileExistsError:
            continue
        os.replace(staging, target)
        return target
    raise RuntimeError(f"could not claim a version number for {name!r}")
