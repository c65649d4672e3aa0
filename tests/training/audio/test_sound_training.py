"""Sound through the GAN pipeline: WAV folders as spectrogram images, a run on them published as a sound
generator whose graph answers waveforms, exported again from its checkpoint, and scored by ear (its clips'
spectrograms through the evaluation classifier)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import tensorflow as tf
from fastapi.testclient import TestClient

from app.main import create_app
from genserve.signatures import audio_signature, signature_of
from genserve.store import AUDIO_OUTPUT, LABEL_INPUT, LATENT_INPUT, SIGNATURE_NAME, read_metadata
from tests.app.helpers import assert_pcm_of, read_wav
from tests.conftest import make_settings, wait_until_ready
from training.audio.data import CLIP_SAMPLES, SAMPLE_RATE
from training.audio.spectrogram import BINS, FRAMES
from training.config import TrainConfig
from training.datasets import ImageDataset, load_dataset
from training.datasets.sounds import SpectrogramDataset
from training.evaluate import LABEL_ACCURACY_BY_CLASS, evaluate_version
from training.export import export_checkpoint
from training.run_info import read_run_info
from training.train import train

TONES = {"high": 1_800.0, "low": 300.0}
CLIPS_PER_CLASS = 10
LATENT_DIM = 8


def _write_tone(path: Path, frequency: float, seconds: float, level: float, rate: int = 22_050) -> None:
    time = np.arange(int(seconds * rate)) / rate
    samples = level * np.sin(2 * np.pi * frequency * time) * np.hanning(len(time))
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, subtype="PCM_16")


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tones/<high|low>/*.wav``: tones of two pitches at various lengths and levels, at 22.05 kHz."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.RandomState(0)
    for name, frequency in TONES.items():
        for index in range(CLIPS_PER_CLASS):
            _write_tone(root / name / f"{index}.wav", frequency, rng.uniform(0.3, 0.8), rng.uniform(0.2, 0.9))
    return root


@pytest.fixture(scope="module")
def sound_run(tones: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(version folder, run folder) of one epoch of a conditional GAN on the tones."""
    root = tmp_path_factory.mktemp("sound-run")
    config = TrainConfig(
        model="cdcgan",
        dataset=f"audio:{tones}",
        name="tones",
        store=root / "store",
        run_dir=root / "run",
        epochs=1,
        batch_size=6,
        latent_dim=LATENT_DIM,
        d_width=0.5,
        seed=0,
    )
    result = train(config)
    assert result.version_dir is not None
    return result.version_dir, root / "run"


def _sound(version: Path, seeds: list[int], labels: list[int]) -> np.ndarray:
    serve = tf.saved_model.load(str(version)).signatures[SIGNATURE_NAME]
    latents = np.stack([np.random.RandomState(seed).randn(LATENT_DIM) for seed in seeds]).astype(np.float32)
    answer = serve(**{LATENT_INPUT: tf.constant(latents), LABEL_INPUT: tf.constant(labels, tf.int32)})
    return np.asarray(answer[AUDIO_OUTPUT].numpy())


def test_a_wav_folder_loads_as_spectrogram_images_with_the_training_clips_normaliser(tones: Path) -> None:
    train_split = load_dataset(f"audio:{tones}")
    test_split = load_dataset(f"audio:{tones}", split="test")

    assert isinstance(train_split, SpectrogramDataset) and isinstance(test_split, SpectrogramDataset)
    assert (len(train_split), len(test_split)) == (18, 2)  # every tenth file held out
    assert train_split.image_shape == (FRAMES, BINS, 1) and train_split.class_names == ["high", "low"]
    assert train_split.images.min() >= -1.0 and train_split.images.max() <= 1.0
    assert train_split.images.std() > 0.05  # pictures, not a constant
    np.testing.assert_array_equal(test_split.normaliser.mean, train_split.normaliser.mean)
    assert train_split.clips.shape == (18, CLIP_SAMPLES) and train_split.sample_rate == SAMPLE_RATE
    # A high tone's energy sits in higher frequency bins than a low one's.
    high, low = (train_split.images[train_split.labels == label].mean(axis=(0, 1, 3)) for label in (0, 1))
    assert np.argmax(high) > np.argmax(low)


def test_sound_is_loaded_at_its_own_size_only(tones: Path) -> None:
    with pytest.raises(ValueError, match="one-channel spectrograms: drop --image-size and --channels"):
        load_dataset(f"audio:{tones}", image_size=64)
    with pytest.raises(ValueError, match="not read from disk"):
        load_dataset("spoken-digits", data_path=tones)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(f"audio:{tones / 'missing'}")


def test_a_sound_run_is_published_as_a_sound_generator_answering_waveforms(
    sound_run: tuple[Path, Path],
) -> None:
    version, _ = sound_run
    metadata = read_metadata(version)

    assert metadata.kind == "specgan" and metadata.is_audio and metadata.conditional
    assert metadata.audio is not None
    assert (metadata.audio.sample_rate, metadata.audio.samples) == (SAMPLE_RATE, CLIP_SAMPLES)
    assert tuple(metadata.audio.spectrogram_shape) == (FRAMES, BINS)
    assert metadata.class_names == ["high", "low"]
    assert signature_of(metadata) == audio_signature(metadata)

    clips = _sound(version, [1, 2, 1], [0, 0, 1])
    assert clips.shape == (3, CLIP_SAMPLES) and clips.dtype == np.float32
    assert np.abs(clips).max() <= 1.0 and np.abs(clips).max() > 0.0
    np.testing.assert_array_equal(clips, _sound(version, [1, 2, 1], [0, 0, 1]))  # same seed, same sound
    assert not np.allclose(clips[0], clips[1])  # another seed
    assert not np.allclose(clips[0], clips[2])  # another class


def test_a_sound_run_exported_again_from_its_checkpoint_sounds_the_same(
    sound_run: tuple[Path, Path], tmp_path: Path
) -> None:
    version, run = sound_run
    info = read_run_info(run)
    assert info.sound is not None and info.sound.sample_rate == SAMPLE_RATE

    again = export_checkpoint(run, tmp_path / "store")

    assert read_metadata(again).kind == "specgan"
    np.testing.assert_allclose(_sound(again, [5, 6], [1, 0]), _sound(version, [5, 6], [1, 0]), atol=1e-5)


def test_a_sound_generator_is_scored_on_the_spectrograms_of_its_clips(
    sound_run: tuple[Path, Path], tones: Path, tmp_path: Path
) -> None:
    version, _ = sound_run
    train_split = load_dataset(f"audio:{tones}")
    test_split = load_dataset(f"audio:{tones}", split="test")

    record = evaluate_version(
        version, train=train_split, held_out=test_split, num_samples=8, cache_dir=tmp_path, batch_size=4
    )

    assert np.isfinite(record.fid) and record.fid >= 0.0
    by_class = record.details[LABEL_ACCURACY_BY_CLASS]
    assert len(by_class) == 2 and all(0.0 <= share <= 1.0 for share in by_class)
    assert record.details["label_accuracy"] == pytest.approx(sum(by_class) / 2)
    with pytest.raises(ValueError, match="makes sound"):
        evaluate_version(
            version, train=_as_images(train_split), held_out=_as_images(test_split), num_samples=2
        )


def test_the_service_answers_a_trained_sound_generators_clips_as_its_graph_makes_them(
    sound_run: tuple[Path, Path],
) -> None:
    version, _ = sound_run
    with TestClient(create_app(make_settings(version.parent.parent))) as client:
        wait_until_ready(client)
        response = client.post("/generate", params={"model": "tones", "n": 2, "seed": 4, "label": 1})

    assert response.status_code == 200, response.text
    samples, reader = read_wav(response.content)
    assert reader.getframerate() == SAMPLE_RATE
    clips = _sound(version, [4, 5], [1, 1])
    assert_pcm_of(samples[:CLIP_SAMPLES], clips[0])
    assert_pcm_of(samples[-CLIP_SAMPLES:], clips[1])


def _as_images(dataset: ImageDataset) -> ImageDataset:
    return ImageDataset(dataset.name, dataset.images, dataset.labels, dataset.class_names)
