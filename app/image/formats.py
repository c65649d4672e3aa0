"""uint8 image batches as file bytes: PNG, PNG grids, WebP, GIF/WebP animations and a zip of PNGs (blocking:
off-loop; the zip and .npy files every generator's answers share are `app/latent/formats.py`'s). Given a
provenance record, each file carries it where its format keeps metadata (see `app/latent/provenance.py`)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, PngImagePlugin

from app.api.schemas import Provenance
from app.latent.formats import archive_bytes
from app.latent.provenance import PNG_TEXT_KEY, json_text, xmp_packet
from genserve.conventions import tile_images

# Black pixels around each tile of a served grid, so neighbouring images do not run into each other.
GRID_PADDING = 2
_PNG_XMP_KEY = "XML:com.adobe.xmp"


def to_pil(image: np.ndarray) -> Image.Image:
    """One HxWxC uint8 image as a Pillow image (grayscale for one channel)."""
    if image.shape[-1] == 1:
        return Image.fromarray(image[..., 0], mode="L")
    return Image.fromarray(image, mode="RGB")


def png_bytes(image: np.ndarray, level: int, provenance: Provenance | None = None) -> bytes:
    """One image as a PNG compressed at zlib `level` (0-9: higher is smaller and slower), with `provenance` as a
    `genserve` iTXt chunk (JSON) and an XMP packet."""
    options: dict[str, object] = {"compress_level": level}
    if provenance is not None:
        text = PngImagePlugin.PngInfo()
        text.add_itxt(PNG_TEXT_KEY, json_text(provenance))
        text.add_itxt(_PNG_XMP_KEY, xmp_packet(provenance))
        options["pnginfo"] = text
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def webp_bytes(image: np.ndarray, provenance: Provenance | None = None) -> bytes:
    """One image as a lossless WebP, with `provenance` as its XMP chunk."""
    options: dict[str, object] = {"lossless": True}
    if provenance is not None:
        options["xmp"] = xmp_packet(provenance).encode()
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="WEBP", **options)
    return buffer.getvalue()


def grid_png_bytes(
    images: np.ndarray, columns: int | None, level: int, provenance: Provenance | None = None
) -> bytes:
    """The images tiled row-major (near-square without `columns`) as one PNG."""
    return png_bytes(tile_images(images, columns, padding=GRID_PADDING), level, provenance)


def png_base64_list(images: np.ndarray, level: int) -> list[str]:
    """One base64 PNG per image, for JSON answers (which carry the provenance as a field of their own)."""
    return [base64.b64encode(png_bytes(image, level)).decode("ascii") for image in images]


def zip_bytes(
    images: np.ndarray, names: list[str], level: int, provenance: Provenance | None = None
) -> bytes:
    """One PNG per image in an uncompressed archive (PNG is compressed already); with `provenance`, a
    `manifest.json` holding the record and the file names, in the order of its seeds."""
    return archive_bytes(
        [(name, png_bytes(image, level)) for name, image in zip(names, images, strict=True)], provenance
    )


def animation_bytes(
    frames: np.ndarray, fps: int, image_format: str, provenance: Provenance | None = None
) -> bytes:
    """An endlessly looping GIF or WebP (lossless) of the frames; `provenance` as WebP's XMP chunk or as the GIF's
    comment (JSON)."""
    pil_frames = [to_pil(frame) for frame in frames]
    buffer = io.BytesIO()
    options: dict[str, object] = {"save_all": True, "append_images": pil_frames[1:], "loop": 0}
    options["duration"] = max(1, round(1000 / fps))
    if image_format == "WEBP":
        options["lossless"] = True
        if provenance is not None:
            options["xmp"] = xmp_packet(provenance).encode()
    else:
        options["disposal"] = 1
        if provenance is not None:
            options["comment"] = json_text(provenance)
    pil_frames[0].save(buffer, format=image_format, **options)
    return buffer.getvalue()
