"""POST /generate and GET /interpolate on sound generators: WAV and FLAC (clips in a row with silence between),
zip, npy and JSON, each WAV and FLAC carrying its provenance; image-only fields refused; /models describing them."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient

from app.audio.formats import gap_samples
from app.main import create_app
from genserve.conventions import latents_from_seeds
from tests.app.audio_models import (
    CLASSES,
    HUM,
    SAMPLE_RATE,
    SAMPLES,
    TONE,
    ToneModels,
    publish_tones,
)
from tests.app.helpers import assert_pcm_of, decode_npy, read_wav
from tests.conftest import make_settings, wait_until_ready
from tests.training.savedmodels import LATENT_DIM

MAX_CLIPS = 4
GAP = gap_samples(SAMPLE_RATE)


@pytest.fixture(scope="module")
def audio_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return publish_tones(tmp_path_factory.mktemp("audio") / "model_store")


@pytest.fixture(scope="module")
def tones(audio_store: Path) -> ToneModels:
    return ToneModels(audio_store)


@pytest.fixture(scope="module")
def audio_client(audio_store: Path) -> Iterator[TestClient]:
    settings = make_settings(audio_store, default_model=TONE, max_clips=MAX_CLIPS)
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        yield client


def info_chunk(data: bytes) -> dict[str, str]:
    """The subchunks of a WAV's LIST/INFO chunk, by id."""
    position, found = 12, {}
    while position + 8 <= len(data):
        chunk_id, size = (
            data[position : position + 4],
            int.from_bytes(data[position + 4 : position + 8], "little"),
        )
        body = data[position + 8 : position + 8 + size]
        if chunk_id == b"LIST" and body[:4] == b"INFO":
            inner = 4
            while inner + 8 <= len(body):
                key, length = body[inner : inner + 4], int.from_bytes(body[inner + 4 : inner + 8], "little")
                found[key.decode()] = body[inner + 8 : inner + 8 + length].rstrip(b"\0").decode()
                inner += 8 + length + length % 2
        position += 8 + size + size % 2
    return found


def test_generate_wav_is_the_clips_in_a_row_with_silence_between(
    audio_client: TestClient, tones: ToneModels
) -> None:
    response = audio_client.post("/generate", params={"model": TONE, "n": 3, "seed": 10})
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["x-model"] == TONE
    assert response.headers["x-model-version"] == "1"
    assert response.headers["x-seeds"] == "10-12"
    samples, reader = read_wav(response.content)
    assert (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) == (SAMPLE_RATE, 1, 2)
    assert len(samples) == 3 * SAMPLES + 2 * GAP
    clips = tones.from_seeds(TONE, [10, 11, 12], [0, 1, 2])
    for index, clip in enumerate(clips):
        start = index * (SAMPLES + GAP)
        assert_pcm_of(samples[start : start + SAMPLES], clip)
        if index < 2:
            assert not samples[start + SAMPLES : start + SAMPLES + GAP].any()


def test_generate_wav_defaults_to_one_clip(audio_client: TestClient, tones: ToneModels) -> None:
    response = audio_client.post("/generate", params={"model": HUM, "seed": 5})
    assert response.status_code == 200
    samples, _ = read_wav(response.content)
    assert_pcm_of(samples, tones.from_seeds(HUM, [5])[0])


def test_generate_same_seed_same_bytes_and_other_seeds_differ(audio_client: TestClient) -> None:
    first = audio_client.post("/generate", params={"model": TONE, "seed": 3}).content
    again = audio_client.post("/generate", json={"model": TONE, "seed": 3}).content
    other = audio_client.post("/generate", params={"model": TONE, "seed": 4}).content
    assert first == again
    assert first != other


def test_generate_wav_carries_the_provenance_in_its_info_chunk(
    audio_client: TestClient, tones: ToneModels
) -> None:
    response = audio_client.post("/generate", params={"model": TONE, "n": 2, "seed": 7, "label": "high"})
    assert response.status_code == 200
    info = info_chunk(response.content)
    record = json.loads(info["ICMT"])
    assert record["model"] == TONE
    assert record["version"] == 1
    assert record["seeds"] == [7, 8]
    assert record["labels"] == ["high", "high"]
    assert record["source"] == "seeds"
    assert record["digital_source_type"].endswith("trainedAlgorithmicMedia")
    assert info["ISFT"].startswith("genserve ")
    assert info["INAM"] == f"{TONE} version 1"
    samples, _ = read_wav(response.content)
    assert_pcm_of(samples[:SAMPLES], tones.from_seeds(TONE, [7], [2])[0])


def test_generate_flac_holds_the_wavs_samples_and_the_provenance(audio_client: TestClient) -> None:
    params: dict[str, str | int] = {"model": TONE, "n": 2, "seed": 7, "label": "high"}
    wav = audio_client.post("/generate", params=params)
    flac = audio_client.post("/generate", params={**params, "format": "flac"})

    assert flac.status_code == 200 and flac.headers["content-type"] == "audio/flac"
    assert flac.content[:4] == b"fLaC" and len(flac.content) < len(wav.content)
    with soundfile.SoundFile(io.BytesIO(flac.content)) as file:
        assert (file.samplerate, file.channels, file.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        samples = file.read(dtype="int16")
        comments = file.copy_metadata()
    wav_samples, _ = read_wav(wav.content)
    np.testing.assert_array_equal(samples, np.rint(wav_samples * 32767).astype(np.int16))
    record = json.loads(comments["comment"])
    assert record == json.loads(info_chunk(wav.content)["ICMT"])
    assert comments["title"] == f"{TONE} version 1" and comments["software"].startswith("genserve ")


def test_generate_zip_holds_one_wav_per_clip_named_by_seed_and_label(
    audio_client: TestClient, tones: ToneModels
) -> None:
    response = audio_client.post("/generate", params={"model": TONE, "n": 2, "seed": 20, "format": "zip"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        assert names == ["seed0000000020-low.wav", "seed0000000021-mid.wav", "manifest.json"]
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["files"] == names[:2]
        assert manifest["seeds"] == [20, 21]
        clips = tones.from_seeds(TONE, [20, 21], [0, 1])
        for index, name in enumerate(names[:2]):
            data = archive.read(name)
            samples, reader = read_wav(data)
            assert reader.getframerate() == SAMPLE_RATE
            assert_pcm_of(samples, clips[index])
            record = json.loads(info_chunk(data)["ICMT"])
            assert record["seeds"] == [20 + index]
            assert record["labels"] == [CLASSES[index]]


def test_generate_npy_is_the_float_clips(audio_client: TestClient, tones: ToneModels) -> None:
    response = audio_client.post("/generate", params={"model": TONE, "n": 2, "seed": 1, "format": "npy"})
    assert response.status_code == 200
    clips = decode_npy(response.content)
    assert clips.dtype == np.float32
    assert clips.shape == (2, SAMPLES)
    np.testing.assert_array_equal(clips, tones.from_seeds(TONE, [1, 2], [0, 1]))


def test_generate_json_has_each_clip_as_base64_wav(audio_client: TestClient, tones: ToneModels) -> None:
    response = audio_client.post(
        "/generate", json={"model": TONE, "n": 2, "seed": 30, "format": "json", "include_latents": True}
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["version"], body["sample_rate"], body["samples"]) == (
        TONE,
        1,
        SAMPLE_RATE,
        SAMPLES,
    )
    assert body["provenance"]["seeds"] == [30, 31]
    clips = tones.from_seeds(TONE, [30, 31], [0, 1])
    latents = latents_from_seeds([30, 31], LATENT_DIM)
    for index, clip in enumerate(body["clips"]):
        assert (clip["seed"], clip["label"], clip["sample_rate"]) == (30 + index, CLASSES[index], SAMPLE_RATE)
        np.testing.assert_allclose(clip["latent"], latents[index], atol=1e-6)
        samples, _ = read_wav(base64.b64decode(clip["wav_base64"]))
        assert_pcm_of(samples, clips[index])


def test_generate_from_latents_names_clips_by_position(audio_client: TestClient, tones: ToneModels) -> None:
    latents = [[0.5] * LATENT_DIM, [-0.5] * LATENT_DIM]
    response = audio_client.post("/generate", json={"model": HUM, "latents": latents, "format": "zip"})
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.namelist() == ["latent0000.wav", "latent0001.wav", "manifest.json"]
        samples, _ = read_wav(archive.read("latent0001.wav"))
    assert_pcm_of(samples, tones.clips(HUM, np.array(latents))[1])
    assert "x-seeds" not in response.headers


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"n": MAX_CLIPS + 1}, "n", f"between 1 and {MAX_CLIPS}"),
        ({"format": "png"}, "format", "png"),
        ({"cols": 2}, "cols", "image generators"),
        ({"prompt": "hello"}, "prompt", "text generators"),
        ({"format": "text"}, "format", "text generators"),
        ({"label": "loudest"}, "label", "loudest"),
    ],
)
def test_generate_refuses_what_a_sound_generator_cannot_do(
    audio_client: TestClient, fields: dict[str, object], field: str, words: str
) -> None:
    response = audio_client.post("/generate", json={"model": TONE, **fields})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert field in message
    assert words in message


def test_image_only_routes_refuse_a_sound_generator(audio_client: TestClient) -> None:
    response = audio_client.get(f"/models/{TONE}/versions/1/images/3.png")
    assert response.status_code == 422
    assert "generates sound" in response.json()["error"]["message"]


def test_interpolate_renders_the_walk_as_one_wav(audio_client: TestClient, tones: ToneModels) -> None:
    query = {"model": TONE, "start": 1, "end": 2, "steps": 3, "label": "mid", "method": "lerp"}
    response = audio_client.get("/interpolate", params=query)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    samples, _ = read_wav(response.content)
    assert len(samples) == 3 * SAMPLES + 2 * GAP
    ends = latents_from_seeds([1, 2], LATENT_DIM)
    walk = np.stack([ends[0], (ends[0] + ends[1]) / 2, ends[1]])
    clips = tones.clips(TONE, walk, [1, 1, 1])
    for index, clip in enumerate(clips):
        start = index * (SAMPLES + GAP)
        assert_pcm_of(samples[start : start + SAMPLES], clip)
    record = json.loads(info_chunk(response.content)["ICMT"])
    assert (record["frames"], record["method"], record["labels"]) == (3, "lerp", ["mid"])
    again = audio_client.get(
        "/interpolate", params=query, headers={"If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304


def test_interpolate_zip_npy_and_flac(audio_client: TestClient, tones: ToneModels) -> None:
    query = {"model": HUM, "start": 1, "end": 2, "steps": 2}
    flac = audio_client.get("/interpolate", params={**query, "format": "flac"})
    assert flac.status_code == 200 and flac.headers["content-type"] == "audio/flac"
    with soundfile.SoundFile(io.BytesIO(flac.content)) as file:
        assert file.frames == 2 * SAMPLES + GAP
        assert json.loads(file.copy_metadata()["comment"])["frames"] == 2
    archive = audio_client.get("/interpolate", params={**query, "format": "zip"})
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as files:
        assert files.namelist() == ["frame0000.wav", "frame0001.wav", "manifest.json"]
    array = audio_client.get("/interpolate", params={**query, "format": "npy"})
    assert array.status_code == 200
    np.testing.assert_allclose(decode_npy(array.content), tones.from_seeds(HUM, [1, 2]), atol=1e-6)


@pytest.mark.parametrize(
    ("query", "field"),
    [({"format": "gif"}, "format"), ({"cols": 2}, "cols"), ({"steps": MAX_CLIPS + 1}, "steps")],
)
def test_interpolate_refuses_image_formats_and_too_many_clips(
    audio_client: TestClient, query: dict[str, object], field: str
) -> None:
    response = audio_client.get("/interpolate", params={"model": HUM, "start": 1, "end": 2, **query})
    assert response.status_code == 422
    assert field in response.json()["error"]["message"]


def test_models_describes_a_sound_generator(audio_client: TestClient) -> None:
    response = audio_client.get("/models")
    assert response.status_code == 200
    models = {model["name"]: model for model in response.json()["models"]}
    version = models[TONE]["versions"][0]
    assert version["kind"] == "specgan"
    assert (version["sample_rate"], version["samples"]) == (SAMPLE_RATE, SAMPLES)
    assert version["seconds"] == pytest.approx(SAMPLES / SAMPLE_RATE)
    assert version["classes"] == CLASSES
    assert version["formats"] == ["wav", "flac", "zip", "npy", "json"]
    assert version["capabilities"] == ["generate_audio", "interpolate", "labels"]
    assert "encode" not in models[HUM]["versions"][0]["capabilities"]
    assert "labels" not in models[HUM]["versions"][0]["capabilities"]


def test_metrics_count_clips(audio_client: TestClient) -> None:
    audio_client.post("/generate", params={"model": HUM, "n": 2, "seed": 99})
    page = audio_client.get("/metrics").text
    lines = [line for line in page.splitlines() if line.startswith("genserve_clips_generated_total{")]
    assert any(f'model="{HUM}"' in line and float(line.split()[-1]) >= 2 for line in lines)
    assert not any(
        line.startswith("genserve_images_generated_total{") and f'model="{HUM}"' in line
        for line in page.splitlines()
    )


def test_clips_are_charged_to_a_keys_clips_quota(audio_store: Path, tmp_path: Path) -> None:
    key = "c" * 24
    keys = tmp_path / "keys.txt"
    keys.write_text(f"team-c: {key} clips_per_s=0.001 clips_burst=3 images_per_s=0.001 images_burst=1\n")
    settings = make_settings(audio_store, default_model=TONE, api_keys_file=keys)
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        headers = {"X-API-Key": key}
        within = client.post("/generate", params={"model": HUM, "n": 3, "seed": 1}, headers=headers)
        over = client.post("/generate", params={"model": HUM, "seed": 9}, headers=headers)
        metrics = client.get("/metrics").text
    assert within.status_code == 200  # three clips, though the key's image burst is one
    assert over.status_code == 429
    assert "clips per second" in over.json()["error"]["message"]
    assert 'genserve_quota_refusals_total{key="team-c",unit="clips"} 1.0' in metrics


def test_more_clips_than_the_queue_holds_is_503_with_retry_after(audio_store: Path) -> None:
    settings = make_settings(audio_store, default_model=TONE, max_queue_images=1)
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        response = client.post("/generate", params={"model": HUM, "n": 2, "seed": 1})
        rejections = client.get("/metrics").text
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "overloaded"
    assert "0 of 1 clips queued; asked for 2" in response.json()["error"]["message"]
    assert f'genserve_rejections_total{{model="{HUM}",reason="overload",version="1"}} 1.0' in rejections
