"""What a run folder's config.json records, and reading it back (to resume, export or evaluate a run)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.datasets.sounds import SoundFormat
from training.run_folder import RUN_INFO_FILE


@dataclass(frozen=True)
class RunInfo:
    """What a run folder's config.json records: the options, and what the data turned out to be."""

    config: TrainConfig
    image_shape: tuple[int, int, int]
    dataset_class_names: list[str] | None = None
    # How the run was spread (`training.distribute.Placement.describe`): strategy, replicas, workers, and the
    # global and per-replica batch sizes.
    distribution: dict[str, Any] | None = None
    # The classes' shares of the training images, for pseudo-classes (`training.clusters`); None: equal.
    class_weights: list[float] | None = None
    # What turns the images back into sound, for a run on sound (`training.datasets.sounds`); None for images.
    sound: SoundFormat | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "image_shape": list(self.image_shape),
            "dataset_class_names": self.dataset_class_names,
            "distribution": self.distribution,
            "class_weights": self.class_weights,
            "sound": self.sound.to_dict() if self.sound is not None else None,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> RunInfo:
        try:
            height, width, channels = (int(size) for size in payload["image_shape"])
            return cls(
                TrainConfig.from_dict(payload["config"]),
                (height, width, channels),
                payload.get("dataset_class_names"),
                payload.get("distribution"),
                payload.get("class_weights"),
                SoundFormat.from_dict(payload["sound"]) if payload.get("sound") else None,
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"{RUN_INFO_FILE} is not a genserve run description ({error!r})") from error


def read_run_info(run_dir: Path) -> RunInfo:
    """Read a run folder's config.json, or raise FileNotFoundError saying what a run folder is."""
    path = Path(run_dir) / RUN_INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist: pass a run folder written by 'training train'"
        )
    return RunInfo.from_dict(json.loads(path.read_text()))
