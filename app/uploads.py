"""Uploaded images: reading a size-limited multipart body and turning each file into the model's input.

An upload is checked in order: the request is multipart (415), the body and each file fit the byte limit
(413), the file decodes as an accepted image format (415), its width and height are within limits (422).
The image is then converted to the model's channels (transparent areas shown over white, as a viewer
would), padded to a square with its own border colour so nothing is cut off, resized to the model's input
and, when asked, inverted (for dark drawings on a light background, where the model learnt light on dark).
"""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import dataclass

import anyio
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.types import Message

from app.errors import InvalidParameter, PayloadTooLarge, UnsupportedMediaType

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MIN_SIDE = 2
# Room for multipart boundaries, part headers and small text fields on top of the files themselves.
_FORM_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int  # per file
    max_side: int  # width and height, pixels
    max_files: int  # per request


@dataclass(frozen=True)
class UploadedImage:
    field: str
    filename: str | None
    pixels: np.ndarray  # uint8 [H, W, C], the model's input shape


async def read_form(request: Request, limits: UploadLimits) -> FormData:
    """The request's multipart form, refusing bodies larger than `limits.max_files` files could make."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            "content-type",
            f"send multipart/form-data (e.g. curl -F image=@digit.png), got {content_type or 'none'!r}",
        )
    max_body = limits.max_files * limits.max_bytes + _FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise _too_large_body(max_body)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            raise _too_large_body(max_body)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return {"type": "http.disconnect"}
        replayed = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    try:
        # The parser's own file cap sits well above the limit so that `files_in` can name the field and
        # count; the body size check above already bounds what a form can hold.
        parsed = Request(request.scope, replay).form(max_files=4 * limits.max_files + 8, max_fields=32)
        return await parsed
    except Exception as error:  # malformed multipart bodies raise parser-specific errors
        raise InvalidParameter("body", f"is not a readable multipart form: {error}") from None


def _too_large_body(max_body: int) -> PayloadTooLarge:
    return PayloadTooLarge("body", f"the request body may hold at most {max_body} bytes")


def files_in(form: FormData, field: str, *, required: int, limit: int) -> list[UploadFile]:
    """The files sent under `field`: between `required` and `limit` of them, else a 422 naming the field."""
    values = form.getlist(field)
    texts = [value for value in values if not isinstance(value, UploadFile)]
    if texts:
        raise InvalidParameter(field, "must be a file part (curl -F field=@file.png), not a text value")
    files = [value for value in values if isinstance(value, UploadFile)]
    if not required <= len(files) <= limit:
        wanted = f"exactly {required}" if required == limit else f"between {required} and {limit}"
        raise InvalidParameter(field, f"needs {wanted} image file(s), got {len(files)}")
    return files


async def load_image(
    field: str,
    upload: UploadFile,
    image_shape: tuple[int, int, int],
    limits: UploadLimits,
    *,
    invert: bool = False,
) -> UploadedImage:
    """One uploaded file as the model's uint8 ``[H, W, C]`` input, or the 4xx error that says why not."""
    data = await upload.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(field, f"each image may be at most {limits.max_bytes} bytes")
    if not data:
        raise InvalidParameter(field, "the uploaded file is empty")
    # Decoding and resizing a large photo takes milliseconds of CPU: keep it off the event loop.
    pixels = await anyio.to_thread.run_sync(
        functools.partial(prepare_image, field, data, image_shape, limits.max_side, invert=invert)
    )
    return UploadedImage(field, upload.filename, pixels)


def prepare_image(
    field: str, data: bytes, image_shape: tuple[int, int, int], max_side: int, *, invert: bool = False
) -> np.ndarray:
    """Decode, check and convert one image file's bytes to uint8 ``image_shape``."""
    image = _open(field, data)
    width, height = image.size
    if not (MIN_SIDE <= width <= max_side and MIN_SIDE <= height <= max_side):
        raise InvalidParameter(
            field, f"is {width}x{height} pixels; width and height must be between {MIN_SIDE} and {max_side}"
        )
    try:
        image.load()
    except (OSError, ValueError) as error:
        raise UnsupportedMediaType(field, f"the image data is damaged or truncated ({error})") from None
    out_height, out_width, channels = image_shape
    converted = _to_mode(image, "L" if channels == 1 else "RGB")
    fitted = ImageOps.pad(
        converted, (out_width, out_height), method=Image.Resampling.LANCZOS, color=_border_colour(converted)
    )
    pixels = np.asarray(fitted, dtype=np.uint8).reshape(out_height, out_width, channels)
    return 255 - pixels if invert else pixels


def _open(field: str, data: bytes) -> Image.Image:
    accepted = ", ".join(ACCEPTED_FORMATS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise UnsupportedMediaType(field, f"is not an image in an accepted format ({accepted})") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise UnsupportedMediaType(field, f"cannot be read as {accepted} ({error})") from None


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """`image` in `mode` ("L" or "RGB"), with transparency composited over white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert(mode)


def _border_colour(image: Image.Image) -> int | tuple[int, ...]:
    """The median colour of the image's outermost pixels: what padding to a square should look like."""
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    median = np.median(border, axis=0)
    return int(median) if np.ndim(median) == 0 else tuple(int(value) for value in median)
