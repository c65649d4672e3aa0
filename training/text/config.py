"""Every option of a text-generator run in one dataclass with visible defaults; the CLI only fills it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genserve.store import validate_model_name
from training.config import TrainConfig
from training.options import check_distribute
from training.run_folder import DEFAULT_RUNS_ROOT

CELLS = ("gru", "lstm", "mingru")
# constant: `lr` throughout; cosine: `lr` falling along a half cosine to a tenth of it by the run's end (its
# time budget when it has one, else its last epoch).
LR_SCHEDULES = ("constant", "cosine")
CHECKPOINT_FILE = "checkpoints/latest.keras"
CHECKPOINT_EPOCH_FILE = "checkpoints/latest.json"


@dataclass(kw_only=True)
class TextTrainConfig:
    """What text to learn, the network's shape, how to train it, and where runs and versions go."""

    dataset: str
    name: str
    store: Path = Path("model_store")
    data_path: str | None = None  # overrides a named dataset's default location (fortunes)
    run_dir: Path | None = None  # default: runs/<name>
    cell: str = "gru"
    layers: int = 2
    units: int = 256
    embedding_dim: int = 64
    sequence_length: int = 128
    dropout: float = 0.1
    batch_size: int = 64
    epochs: int = 10
    lr: float = 2e-3
    lr_schedule: str = "constant"
    clip_norm: float = 1.0
    seed: int | None = 0
    held_out: float = 0.1  # share of documents (or, for one document, of characters) kept for evaluation
    limit_chars: int | None = None  # cut the training text to this many characters, for quick runs
    resume: bool = False
    time_budget: float | None = None  # minutes: stop at the batch that reaches them (mid-epoch), then publish
    sample_length: int = 200  # characters sampled into samples/ after every epoch
    export: bool = True
    # How training spreads over devices or machines: the image models' modes and default
    # (`training.config.DISTRIBUTE_MODES`). batch_size is the global batch: each of R replicas takes 1/R of it.
    distribute: str = TrainConfig.distribute

    def __post_init__(self) -> None:
        validate_model_name(self.name)
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        for field in ("layers", "units", "embedding_dim", "sequence_length", "batch_size", "epochs"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(
                f"time_budget must be a positive number of minutes, got {self.time_budget}: leave it unset to "
                "train every epoch"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.held_out < 0.5:
            raise ValueError(f"held_out must be in (0, 0.5), got {self.held_out}")
        if self.lr <= 0 or self.clip_norm <= 0:
            raise ValueError("lr and clip_norm must be positive")
        if self.limit_chars is not None and self.limit_chars < 4 * self.sequence_length:
            raise ValueError(f"limit_chars must be at least 4 x sequence_length ({4 * self.sequence_length})")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        check_distribute(self.distribute)

    @property
    def run_folder(self) -> Path:
        return self.run_dir if self.run_dir is not None else DEFAULT_RUNS_ROOT / self.name

    @property
    def state_size(self) -> int:
        """Floats of recurrent state per sequence: every layer's h (and an LSTM's c)."""
        return self.layers * self.units * (2 if self.cell == "lstm" else 1)

    def to_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        return {key: str(value) if isinstance(value, Path) else value for key, value in values.items()}

    def architecture(self) -> dict[str, Any]:
        """The fields a checkpoint must agree on to be resumed."""
        return {key: getattr(self, key) for key in ("cell", "layers", "units", "embedding_dim")}
