"""Grids, animations, archives and arrays decode back to the pixels that went in, with their provenance."""

from __future__ import annotations

import io
import json
import zipfile
from xml.etree import ElementTree

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngImageFile

from app.api.schemas import Provenance
from app.config import Settings
from app.image import formats
from app.latent import provenance
from app.latent.formats import ZIP_MANIFEST, npy_bytes
from tests.app.helpers import decode_npy, decode_png, frame_count

# The service's own default level (any level decodes to the same pixels).
LEVEL: int = Settings.model_fields["png_compress_level"].default
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"


def images(count: int, channels: int) -> np.ndarray:
    return np.random.RandomState(0).randint(0, 256, (count, 6, 5, channels), dtype=np.uint8)


def test_grid_png_pads_tiles_with_black() -> None:
    batch = np.full((2, 6, 5, 1), 255, dtype=np.uint8)
    grid = decode_png(formats.grid_png_bytes(batch, 2, LEVEL))
    padding = formats.GRID_PADDING
    assert grid.shape[:2] == (6 + 2 * padding, 2 * 5 + 3 * padding)
    assert grid[:padding].max() == 0 and grid[padding : padding + 6, padding : padding + 5].min() == 255


def test_grayscale_png_round_trips() -> None:
    image = images(1, 1)[0]
    decoded = decode_png(formats.png_bytes(image, LEVEL))
    np.testing.assert_array_equal(decoded, image)
    assert Image.open(io.BytesIO(formats.png_bytes(image, LEVEL))).mode == "L"


def test_npy_and_zip_round_trip() -> None:
    batch = images(3, 3)
    np.testing.assert_array_equal(decode_npy(npy_bytes(batch)), batch)
    with zipfile.ZipFile(io.BytesIO(formats.zip_bytes(batch, ["a.png", "b.png", "c.png"], LEVEL))) as archive:
        np.testing.assert_array_equal(decode_png(archive.read("c.png")), batch[2])


def test_animations_keep_every_frame_and_loop() -> None:
    batch = images(4, 3)
    for image_format in ("GIF", "WEBP"):
        data = formats.animation_bytes(batch, fps=10, image_format=image_format)
        assert frame_count(data) == 4
        assert Image.open(io.BytesIO(data)).info.get("loop") == 0
    webp = Image.open(io.BytesIO(formats.animation_bytes(batch, fps=10, image_format="WEBP")))
    webp.seek(2)
    np.testing.assert_array_equal(np.asarray(webp.convert("RGB")), batch[2])


def test_png_compress_level_trades_size_for_time_not_pixels() -> None:
    batch = np.zeros((16, 28, 28, 1), dtype=np.uint8)
    batch[:, 8:20, 10:14] = 255
    stored, smallest = formats.grid_png_bytes(batch, None, 0), formats.grid_png_bytes(batch, None, 9)
    assert len(stored) > 2 * len(smallest)
    np.testing.assert_array_equal(decode_png(stored), decode_png(smallest))


RECORD = Provenance(
    model="digits",
    version=3,
    source="seeds",
    seeds=[7, 8],
    truncation=0.5,
    latent_scale=1.0,
    service_version="1.2.3",
    digital_source_type=provenance.TRAINED_ALGORITHMIC_MEDIA,
)


def test_each_container_carries_the_record_and_keeps_its_pixels() -> None:
    batch = images(2, 3)
    png = Image.open(io.BytesIO(formats.grid_png_bytes(batch, None, LEVEL, RECORD)))
    assert isinstance(png, PngImageFile)
    assert json.loads(png.text[provenance.PNG_TEXT_KEY])["seeds"] == [7, 8]
    assert b"trainedAlgorithmicMedia" in png.info["xmp"]
    webp = Image.open(io.BytesIO(formats.webp_bytes(batch[0], RECORD)))
    assert b'genserve:model="digits"' in webp.info["xmp"]
    np.testing.assert_array_equal(np.asarray(webp.convert("RGB")), batch[0])
    gif = Image.open(
        io.BytesIO(formats.animation_bytes(batch, fps=10, image_format="GIF", provenance=RECORD))
    )
    assert json.loads(gif.info["comment"])["truncation"] == 0.5
    with zipfile.ZipFile(io.BytesIO(formats.zip_bytes(batch, ["a.png", "b.png"], LEVEL, RECORD))) as archive:
        manifest = json.loads(archive.read(ZIP_MANIFEST))
        np.testing.assert_array_equal(decode_png(archive.read("b.png")), batch[1])
    assert manifest["files"] == ["a.png", "b.png"] and manifest["seeds"] == [7, 8]


def test_without_a_record_files_carry_no_metadata() -> None:
    batch = images(2, 3)
    png = Image.open(io.BytesIO(formats.grid_png_bytes(batch, None, LEVEL)))
    assert isinstance(png, PngImageFile)
    assert png.text == {} and "xmp" not in png.info
    assert "xmp" not in Image.open(io.BytesIO(formats.webp_bytes(batch[0]))).info
    assert "comment" not in Image.open(io.BytesIO(formats.animation_bytes(batch, 10, "GIF"))).info
    with zipfile.ZipFile(io.BytesIO(formats.zip_bytes(batch, ["a.png", "b.png"], LEVEL))) as archive:
        assert archive.namelist() == ["a.png", "b.png"]


def test_the_xmp_packet_is_well_formed_and_escapes_class_names() -> None:
    record = RECORD.model_copy(update={"labels": ['<"a" & b>', "c"]})
    root = ElementTree.fromstring(provenance.xmp_packet(record))
    description = root.find(f"{{{RDF}}}RDF/{{{RDF}}}Description")
    assert description is not None
    assert description.get(f"{{{IPTC_EXT}}}DigitalSourceType") == provenance.TRAINED_ALGORITHMIC_MEDIA
    labels = description.findall(f"{{{provenance.XMP_NAMESPACE}}}labels/{{{RDF}}}Seq/{{{RDF}}}li")
    assert [item.text for item in labels] == ['<"a" & b>', "c"]
