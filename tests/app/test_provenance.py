"""Every image file served says where it came from, read back with Pillow: PNG text and XMP, WebP XMP, a GIF's
comment, a zip's manifest, and a field of JSON answers; `GENSERVE_IMAGE_METADATA=false` leaves them all out."""

from __future__ import annotations

import importlib.metadata
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image
from PIL.PngImagePlugin import PngImageFile

from app.main import create_app
from tests.app.helpers import decode_png
from tests.conftest import TINY_MODEL, TINY_VAE, make_settings, wait_until_ready

TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def png_text(data: bytes) -> dict[str, str]:
    """A PNG's text chunks, as Pillow reads them."""
    image = opened(data)
    assert isinstance(image, PngImageFile)
    return dict(image.text)


def png_record(data: bytes) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(png_text(data)["genserve"])
    return record


def xmp(data: bytes) -> str:
    return bytes(opened(data).info["xmp"]).decode()


def test_generate_png_carries_its_provenance_as_text_and_xmp(client: TestClient) -> None:
    response = client.post("/generate", params={"n": 3, "seed": 42, "truncation": 0.5})
    assert response.status_code == 200
    record = png_record(response.content)
    assert record == {
        "model": TINY_MODEL,
        "version": 1,
        "source": "seeds",
        "seeds": [42, 43, 44],
        "truncation": 0.5,
        "latent_scale": 1.0,
        "service_version": importlib.metadata.version("genserve"),
        "digital_source_type": TRAINED,
    }
    packet = xmp(response.content)
    assert f'Iptc4xmpExt:DigitalSourceType="{TRAINED}"' in packet
    assert f'genserve:model="{TINY_MODEL}"' in packet and 'genserve:version="1"' in packet
    assert "<rdf:li>42</rdf:li><rdf:li>43</rdf:li><rdf:li>44</rdf:li>" in packet


def test_generate_zip_and_json_carry_the_record_beside_the_images(client: TestClient) -> None:
    response = client.post("/generate", params={"n": 2, "seed": 5, "format": "zip"})
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["files"] == ["seed0000000005.png", "seed0000000006.png"]
    assert (manifest["model"], manifest["version"], manifest["seeds"]) == (TINY_MODEL, 1, [5, 6])
    assert manifest["digital_source_type"] == TRAINED

    response = client.post("/generate", params={"n": 2, "seed": 5, "format": "json"})
    assert response.status_code == 200
    assert response.json()["provenance"] == {key: value for key, value in manifest.items() if key != "files"}


def test_interpolations_carry_their_keyframe_seeds_and_frame_count(client: TestClient) -> None:
    query = {"seeds": "3,7", "steps": 4}
    gif = client.get("/interpolate", params={**query, "format": "gif"})
    assert gif.status_code == 200
    comment = json.loads(opened(gif.content).info["comment"])
    assert (comment["seeds"], comment["frames"], comment["method"]) == ([3, 7], 4, "slerp")
    assert comment["digital_source_type"] == TRAINED
    webp = client.get("/interpolate", params={**query, "format": "webp"})
    assert webp.status_code == 200
    assert 'genserve:frames="4"' in xmp(webp.content) and TRAINED in xmp(webp.content)
    strip = client.get("/interpolate", params={**query, "format": "png"})
    assert png_record(strip.content) == comment
    json_answer = client.get("/interpolate", params={**query, "format": "json"})
    assert json_answer.json()["provenance"] == comment


def test_image_urls_carry_their_one_seed(client: TestClient) -> None:
    png = client.get(f"/models/{TINY_MODEL}/versions/1/images/9.png")
    assert png.status_code == 200
    assert png_record(png.content)["seeds"] == [9]
    webp = client.get(f"/models/{TINY_MODEL}/versions/1/images/9.webp")
    assert webp.status_code == 200
    assert "<rdf:li>9</rdf:li>" in xmp(webp.content) and TRAINED in xmp(webp.content)


def test_reconstructions_say_they_come_from_uploads(vae_client: TestClient) -> None:
    upload = client_png(vae_client)
    alone = vae_client.post("/reconstruct", files={"image": ("a.png", upload, "image/png")})
    assert alone.status_code == 200
    record = png_record(alone.content)
    assert (record["model"], record["source"], record["digital_source_type"]) == (
        TINY_VAE,
        "uploads",
        TRAINED,
    )
    assert "seeds" not in record
    beside = vae_client.post(
        "/reconstruct", params={"compare": True}, files={"image": ("a.png", upload, "image/png")}
    )
    assert beside.status_code == 200
    assert png_record(beside.content)["digital_source_type"] == COMPOSITE


def client_png(client: TestClient) -> bytes:
    """A PNG of one of the model's own images, to upload."""
    response = client.get(f"/models/{TINY_VAE}/versions/1/images/1.png")
    assert response.status_code == 200
    return response.content


def test_metadata_off_leaves_every_file_bare(tiny_store: Path) -> None:
    with TestClient(create_app(make_settings(tiny_store, image_metadata=False))) as client:
        wait_until_ready(client)
        png = client.post("/generate", params={"n": 2, "seed": 1})
        assert png.status_code == 200
        assert png_text(png.content) == {} and "xmp" not in opened(png.content).info
        gif = client.get("/interpolate", params={"seeds": "1,2", "steps": 3, "format": "gif"})
        assert "comment" not in opened(gif.content).info
        webp = client.get(f"/models/{TINY_MODEL}/versions/1/images/1.webp")
        assert "xmp" not in opened(webp.content).info
        archive = client.post("/generate", params={"n": 2, "seed": 1, "format": "zip"})
        assert zipfile.ZipFile(io.BytesIO(archive.content)).namelist() == [
            "seed0000000001.png",
            "seed0000000002.png",
        ]
        assert "provenance" not in client.post("/generate", params={"n": 1, "format": "json"}).json()
        assert (
            "provenance" not in client.get("/interpolate", params={"seeds": "1,2", "format": "json"}).json()
        )
        image = client.get(f"/models/{TINY_MODEL}/versions/1/images/1.png")
        decode_png(image.content)
        assert png_text(image.content) == {}
