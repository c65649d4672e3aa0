"""What a published version says about where it came from, without naming paths of the machine that trained it.

A version's `genserve.json` travels: it is copied between machines, bundled, and shown by `/models`. The
training options it records keep paths inside the project relative to it (`runs/mnist-dcgan`) and leave out
paths outside it, which name nothing anywhere else; the data the run read is identified by its content instead
(`data_sha256`), with a dataset spec such as ``npz:/data/faces.npz`` reduced to ``npz:faces.npz``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

# Training options that hold paths of the machine that trained.
PATH_OPTIONS = ("data_path", "run_dir", "store")
# Dataset specs that carry a path after their prefix.
DATASET_PATH_PREFIXES = ("folder:", "npz:", "text:")
DATA_HASH_OPTION = "data_sha256"
_CHUNK_BYTES = 1024 * 1024


def portable_options(options: dict[str, Any], data: Path | None, root: Path | None = None) -> dict[str, Any]:
    """`options` as a version publishes them: paths relative to `root` (the working folder by default) when
    inside it, left out when not, and the content hash of `data` (the file or folder the run read) if known."""
    base = (root or Path.cwd()).resolve()
    published = dict(options)
    for key in PATH_OPTIONS:
        if published.get(key) is not None:
            published[key] = _relative(Path(published[key]), base)
    dataset = published.get("dataset")
    if isinstance(dataset, str):
        published["dataset"] = portable_dataset(dataset, base)
    if data is not None and data.exists():
        published[DATA_HASH_OPTION] = content_hash(data)
    return published


def portable_dataset(spec: str, root: Path | None = None) -> str:
    """A dataset spec without a machine path: ``npz:PATH`` relative to `root` when inside it, else its file name."""
    for prefix in DATASET_PATH_PREFIXES:
        if spec.startswith(prefix):
            path = Path(spec.removeprefix(prefix))
            relative = _relative(path, (root or Path.cwd()).resolve())
            return prefix + (relative if relative is not None else path.name)
    return spec


def dataset_location(spec: str, data_path: str | None) -> Path | None:
    """The local file or folder a run reads for `spec`, where one is named (`data_path`, or a spec's path)."""
    if data_path:
        return Path(data_path)
    for prefix in DATASET_PATH_PREFIXES:
        if spec.startswith(prefix):
            return Path(spec.removeprefix(prefix))
    return None


def content_hash(path: Path) -> str:
    """SHA-256 of a file's bytes, or of a folder's regular files (their relative names and bytes, in name order)."""
    digest = hashlib.sha256()
    if path.is_file():
        _update(digest, path)
        return digest.hexdigest()
    for file in sorted(item for item in path.rglob("*") if item.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        _update(digest, file)
    return digest.hexdigest()


def _update(digest: Any, file: Path) -> None:
    with file.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return None
