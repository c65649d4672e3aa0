import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from genserve.store import SIGNATURE_NAME, list_versions, read_metadata
from tests.training.runs import InterruptAt, shapes_config
from training.config import TrainConfig
from training.export import export_checkpoint
from training.run_folder import CHECKPOINTS_DIR, HISTORY_FILE, SAMPLES_DIR
from training.run_info import read_run_info
from training.train import TrainResult, train

NAME = "shapes-dcgan"
LATENT_DIM = 16
IMAGE_SIZE = 28
STEPS_PER_EPOCH = 2  # 64 images in batches of 32


def _checkpoint_values(run_dir: Path, prefix: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(run_dir / CHECKPOINTS_DIR))
    names = [name for name in reader.get_variable_to_shape_map() if name.startswith(prefix)]
    return {name: reader.get_tensor(name) for name in names}


def _iterations(run_dir: Path) -> int:
    values = _checkpoint_values(run_dir, "g_optimizer/_iterations")
    return int(next(iter(values.values())))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, TrainResult]:
    config = shapes_config(tmp_path_factory.mktemp("trained"))
    return config, train(config)


def test_training_writes_history_samples_checkpoints_and_config(
    trained: tuple[TrainConfig, TrainResult],
) -> None:
    config, result = trained

    assert result.run_dir == config.run_dir and result.epochs_completed == 2
    history = json.loads((result.run_dir / HISTORY_FILE).read_text())["epochs"]
    assert history == result.history
    assert [entry["epoch"] for entry in history] == [1, 2]
    for entry in history:
        assert {"d_loss", "g_loss", "images_per_second", "wall_seconds"} <= set(entry)
        assert entry["images"] == 64 and entry["images_per_second"] > 0
    for epoch in (1, 2):
        with Image.open(result.run_dir / SAMPLES_DIR / f"epoch_{epoch:03d}.png") as grid:
            assert grid.size == (8 * IMAGE_SIZE, 8 * IMAGE_SIZE)
    assert tf.train.latest_checkpoint(str(result.run_dir / CHECKPOINTS_DIR)) is not None
    info = read_run_info(result.run_dir)
    assert info.config == config and info.image_shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert _iterations(result.run_dir) == 2 * STEPS_PER_EPOCH


def test_training_publishes_the_averaged_generator(trained: tuple[TrainConfig, TrainResult]) -> None:
    config, result = trained

    assert result.version_dir == config.store / NAME / "1"
    metadata = read_metadata(result.version_dir)
    assert metadata.epochs == 2 and metadata.latent_dim == LATENT_DIM
    assert metadata.training_config["exported_generator"] == "ema"
    serve = tf.saved_model.load(str(result.version_dir)).signatures[SIGNATURE_NAME]
    images = serve(z=tf.zeros([2, LATENT_DIM]))["images"]
    assert images.dtype == tf.uint8 and images.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_export_checkpoint_publishes_new_versions_from_a_run_or_a_checkpoint(
    trained: tuple[TrainConfig, TrainResult], tmp_path: Path
) -> None:
    config, result = trained
    prefix = tf.train.latest_checkpoint(str(result.run_dir / CHECKPOINTS_DIR))

    averaged = export_checkpoint(result.run_dir, tmp_path)
    raw = export_checkpoint(Path(prefix), tmp_path, name="renamed", use_ema=False)

    assert list_versions(tmp_path, NAME) == [1] and list_versions(tmp_path, "renamed") == [1]
    assert read_metadata(averaged).training_config["exported_generator"] == "ema"
    assert read_metadata(raw).training_config["exported_generator"] == "raw"
    assert read_metadata(raw).epochs == 2
    z = tf.constant(np.random.RandomState(0).randn(4, LATENT_DIM), tf.float32)
    from_training = tf.saved_model.load(str(result.version_dir)).signatures[SIGNATURE_NAME](z=z)["images"]
    from_checkpoint = tf.saved_model.load(str(averaged)).signatures[SIGNATURE_NAME](z=z)["images"]
    assert np.abs(from_training.numpy().astype(int) - from_checkpoint.numpy().astype(int)).max() <= 1


def test_export_checkpoint_of_a_missing_path_says_what_it_expects(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run folder"):
        export_checkpoint(tmp_path / "nowhere", tmp_path / "store")


def test_resume_continues_from_the_saved_epoch_and_step(
    trained: tuple[TrainConfig, TrainResult], tmp_path: Path
) -> None:
    config, result = trained
    run_dir = tmp_path / "run"
    shutil.copytree(result.run_dir, run_dir)
    resumed_config = replace(config, run_dir=run_dir, epochs=3, resume=True, export=False)

    resumed = train(resumed_config)

    assert resumed.epochs_completed == 3 and resumed.version_dir is None
    assert [entry["epoch"] for entry in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == result.history
    assert _iterations(run_dir) == 3 * STEPS_PER_EPOCH
    assert (run_dir / SAMPLES_DIR / "epoch_003.png").is_file()


def test_same_seed_gives_identical_weights(trained: tuple[TrainConfig, TrainResult], tmp_path: Path) -> None:
    config, result = trained

    again = train(replace(config, run_dir=tmp_path / "run", export=False))

    first = _checkpoint_values(result.run_dir, "generator/")
    second = _checkpoint_values(again.run_dir, "generator/")
    assert first and first.keys() == second.keys()
    for name, value in first.items():
        np.testing.assert_array_equal(value, second[name], err_msg=name)
    assert again.history[-1]["g_loss"] == result.history[-1]["g_loss"]


def test_existing_checkpoints_are_not_overwritten_without_resume(
    trained: tuple[TrainConfig, TrainResult],
) -> None:
    config, _ = trained

    with pytest.raises(ValueError, match="--resume"):
        train(replace(config, epochs=3))


def test_resume_with_a_different_architecture_is_refused(
    trained: tuple[TrainConfig, TrainResult], tmp_path: Path
) -> None:
    config, result = trained
    shutil.copytree(result.run_dir, tmp_path / "run")

    with pytest.raises(ValueError, match="cannot resume"):
        train(replace(config, run_dir=tmp_path / "run", latent_dim=8, resume=True, epochs=3))
    with pytest.raises(
        ValueError, match=r"cannot resume: .*spectral_norm, .*\) = .*False, .*\) but .*True, "
    ):
        train(replace(config, run_dir=tmp_path / "run", spectral_norm=True, resume=True, epochs=3))
    with pytest.raises(ValueError, match=r"cannot resume: .*d_width, .*\) = .*2\.0, .*\) but .*1\.0, "):
        train(replace(config, run_dir=tmp_path / "run", d_width=1.0, resume=True, epochs=3))


def test_ctrl_c_saves_a_checkpoint_that_resume_picks_up(tmp_path: Path) -> None:
    config = shapes_config(tmp_path, epochs=2, ema_decay=0.0, export=False)

    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[InterruptAt(epoch=1)])

    assert _iterations(config.run_path) == STEPS_PER_EPOCH + 1  # one full epoch and one step of the next
    assert int(_checkpoint_values(config.run_path, "epoch/")["epoch/.ATTRIBUTES/VARIABLE_VALUE"]) == 1
    resumed = train(replace(config, resume=True))
    assert resumed.epochs_completed == 2
    assert _iterations(config.run_path) == 2 * STEPS_PER_EPOCH + 1
