"""The files every generator that draws from latents answers in, whatever its outputs are (blocking: off-loop):
a stored zip of files already encoded (PNGs, WAVs) with its manifest, and the raw array as .npy. The image and
sound files inside are `app/image/formats.py`'s and `app/audio/formats.py`'s."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from app.api.schemas import Provenance
from app.latent.provenance import provenance_fields

# The file in a zip that describes the archive: the provenance record and its files, in the record's order.
ZIP_MANIFEST = "manifest.json"


def npy_bytes(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, images, allow_pickle=False)
    return buffer.getvalue()


def archive_bytes(files: list[tuple[str, bytes]], provenance: Provenance | None = None) -> bytes:
    """Named files (compressed already: PNG, or WAV that deflate barely shrinks) in a stored archive; with
    `provenance`, a `manifest.json` holding the record and the file names, in order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files:
            archive.writestr(name, data)
        if provenance is not None:
            manifest = {**provenance_fields(provenance), "files": [name for name, _ in files]}
            archive.writestr(ZIP_MANIFEST, json.dumps(manifest, indent=2))
    return buffer.getvalue()
