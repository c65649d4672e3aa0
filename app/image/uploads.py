"""Uploaded images: reading a size-limited multipart body and turning each file into the model's input.

An upload is checked in order: the request is multipart (415), the body and each file fit the byte limit
(413), the file is an accepted image format (415), its width, height and pixel count, read from its header
before any pixel is decoded, are within limits and within what is left of the request's pixel budget (422).
Only a few images decode at once across all requests.
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

from app.api.params import shown
from app.server.body_limit import is_multipart, too_large
from app.server.errors import InvalidParameter, PayloadTooLarge, UnsupportedMediaType
from app.server.memory import release_free_memory

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MIN_SIDE = 2
# Room for multipart boundaries, part headers and small text fields on top of the files themselves.
_FORM_OVERHEAD_BYTES = 64 * 1024
# After a request that decoded more pixels than this, freed image memory is handed back to the system.
_TRIM_AFTER_PIXELS = 1024 * 1024
# Very large images are first shrunk by a whole factor to about this many times the model's input side:
# plenty for a good resize, and far less memory for colour conversion and padding.
_SHRINK_TO_SIDES = 4
_REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "I", "F")


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int  # per file
    max_side: int  # width and height, pixels
    max_pixels: int  # width x height of one image
    max_request_pixels: int  # all the images of one request together
    max_files: int  # per request

    def body_bytes(self, files: int) -> int:
        """The largest multipart body that `files` files can make."""
        return files * self.max_bytes + _FORM_OVERHEAD_BYTES


@dataclass(frozen=True)
class UploadedImage:
    field: str
    filename: str | None
    pixels: np.ndarray  # uint8 [H, W, C], the model's input shape


class PixelBudget:
    """The pixels one request may still decode; each image takes its share before it is decoded."""

    def __init__(self, pixels: int) -> None:
        self.limit = pixels
        self.used = 0

    def take(self, field: str, pixels: int) -> None:
        if self.used + pixels > self.limit:
            raise InvalidParameter(
                field, f"the images of one request may hold at most {self.limit} pixels together"
            )
        self.used += pixels


class UploadReader:
    """Reads upload requests within their limits; at most `max_concurrent_decodes` images decode at once."""

    def __init__(self, limits: UploadLimits, max_concurrent_decodes: int) -> None:
        self.limits = limits
        self._decoders = anyio.CapacityLimiter(max_concurrent_decodes)

    async def read(
        self,
        request: Request,
        fields: dict[str, tuple[int, int]],
        image_shape: tuple[int, int, int],
        *,
        invert: bool = False,
    ) -> list[UploadedImage]:
        """Every file of `fields` (name -> (fewest, most) files), read, checked and converted, in field order."""
        most_files = sum(most for _, most in fields.values())
        form = await read_form(request, self.limits.body_bytes(most_files), most_files)
        budget = PixelBudget(self.limits.max_request_pixels)
        try:
            images = []
            for field, (fewest, most) in fields.items():
                for upload in files_in(form, field, required=fewest, limit=most):
                    images.append(await self._load(field, upload, image_shape, budget, invert))
            return images
        finally:
            await form.close()
            if budget.used > _TRIM_AFTER_PIXELS:
                await anyio.to_thread.run_sync(release_free_memory)

    async def _load(
        self,
        field: str,
        upload: UploadFile,
        image_shape: tuple[int, int, int],
        budget: PixelBudget,
        invert: bool,
    ) -> UploadedImage:
        """One uploaded file as the model's uint8 ``[H, W, C]`` input, or the 4xx error that says why not."""
        limits = self.limits
        data = await upload.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            raise PayloadTooLarge(field, f"each image may be at most {limits.max_bytes} bytes")
        if not data:
            raise InvalidParameter(field, "the uploaded file is empty")
        # Decoding and resizing takes milliseconds to seconds of CPU: off the event loop, a few at a time.
        prepare = functools.partial(
            prepare_image, field, data, image_shape, limits, invert=invert, budget=budget
        )
        pixels = await anyio.to_thread.run_sync(prepare, limiter=self._decoders)
        return UploadedImage(field, upload.filename, pixels)


async def read_form(request: Request, max_body: int, max_files: int) -> FormData:
    """The request's multipart form, refusing bodies larger than `max_body` bytes."""
    content_type = request.headers.get("content-type", "")
    if not is_multipart(content_type):
        raise UnsupportedMediaType(
            "content-type",
            f"send multipart/form-data (e.g. curl -F image=@digit.png), got {shown(content_type or 'none')}",
        )
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_body:
        raise too_large(max_body)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            raise too_large(max_body)
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
        parsed = Request(request.scope, replay).form(max_files=4 * max_files + 8, max_fields=32)
        return await parsed
    except Exception:  # malformed multipart bodies raise parser-specific errors
        raise InvalidParameter("body", "is not a readable multipart form") from None


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


def prepare_image(
    field: str,
    data: bytes,
    image_shape: tuple[int, int, int],
    limits: UploadLimits,
    *,
    invert: bool = False,
    budget: PixelBudget | None = None,
) -> np.ndarray:
    """Decode, check and convert one image file's bytes to uint8 ``image_shape`` (blocking).

    The size is checked from the file's header, before any pixel is decoded.
    """
    image = _open(field, data, limits.max_pixels)
    width, height = image.size
    if not (MIN_SIDE <= width <= limits.max_side and MIN_SIDE <= height <= limits.max_side):
        raise InvalidParameter(
            field,
            f"is {width}x{height} pixels; width and height must be between {MIN_SIDE} and {limits.max_side}",
        )
    if width * height > limits.max_pixels:
        raise InvalidParameter(
            field,
            f"is {width}x{height} = {width * height} pixels; an image may hold at most {limits.max_pixels}",
        )
    if budget is not None:
        budget.take(field, width * height)
    out_height, out_width, channels = image_shape
    image = _decoded(field, image, _SHRINK_TO_SIDES * max(out_height, out_width))
    converted = _to_mode(image, "L" if channels == 1 else "RGB")
    fitted = ImageOps.pad(
        converted, (out_width, out_height), method=Image.Resampling.LANCZOS, color=_border_colour(converted)
    )
    pixels = np.asarray(fitted, dtype=np.uint8).reshape(out_height, out_width, channels)
    return 255 - pixels if invert else pixels


def _decoded(field: str, image: Image.Image, enough_side: int) -> Image.Image:
    """The decoded image, shrunk by a whole factor while its shorter side stays above `enough_side`."""
    # JPEG can decode straight at 1/2, 1/4 or 1/8 scale; other formats ignore this.
    image.draft(image.mode, (enough_side, enough_side))
    try:
        image.load()
    except (OSError, ValueError) as error:
        raise UnsupportedMediaType(field, f"the image data is damaged or truncated ({error})") from None
    factor = min(image.size) // enough_side
    return image.reduce(factor) if factor >= 2 and image.mode in _REDUCIBLE_MODES else image


def _open(field: str, data: bytes, max_pixels: int) -> Image.Image:
    """The image in `data`, header read but pixels not yet decoded."""
    accepted = ", ".join(ACCEPTED_FORMATS)
    try:
        with warnings.catch_warnings():
            # The pixel limit is checked by the caller, with a 422 that names it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise InvalidParameter(
            field, f"holds far more pixels than the {max_pixels} an image may hold"
        ) from None
    except UnidentifiedImageError:
        raise UnsupportedMediaType(field, f"is not an image in an accepted format ({accepted})") from None
    except (OSError, ValueError, SyntaxError):
        raise UnsupportedMediaType(field, f"cannot be read as {accepted}") from None


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
