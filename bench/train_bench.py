"""Our DCGAN recipe against the TensorFlow tutorial's, for the same wall time on this machine.

Both recipes train the same networks on the same data with the same seed; only the optimizer settings and
the generator averaging differ (see `training.config.TUTORIAL_SETTINGS`). Each gets ``--seconds`` of
training, its throughput is measured after the first (compiling) step, and its published generator is then
scored with the evaluation classifier (FID and Inception Score, lower and higher is better).

    python -m bench train [--data mnist.npz] [--seconds 120] [--samples 2000]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from genserve.store import EvaluationRecord
from training.config import TrainConfig
from training.datasets import ImageDataset, load_dataset
from training.evaluate import evaluate_version
from training.train import train

logger = logging.getLogger(__name__)

RECIPES = ("genserve", "tutorial")
_EPOCHS_CEILING = 10_000  # the time budget, not the epoch count, ends each run


class TimedThroughput(keras.callbacks.Callback):
    """Stop training after `seconds` and measure images/s from the end of the first step to the last."""

    def __init__(self, seconds: float, batch_size: int) -> None:
        super().__init__()
        self.seconds = seconds
        self.batch_size = batch_size
        self.steps = 0
        self._deadline = 0.0
        self._first_step_end = 0.0
        self._last_step_end = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._deadline = time.monotonic() + self.seconds

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.steps += 1
        self._last_step_end = time.perf_counter()
        if self.steps == 1:
            self._first_step_end = self._last_step_end
        if time.monotonic() >= self._deadline:
            self.model.stop_training = True

    @property
    def images_per_second(self) -> float:
        seconds = self._last_step_end - self._first_step_end
        return (self.steps - 1) * self.batch_size / seconds if seconds > 0 else 0.0


@dataclass(frozen=True)
class RecipeResult:
    config: TrainConfig
    steps: int
    images_per_second: float
    epochs_seen: float
    evaluation: EvaluationRecord


def run_recipe(
    recipe: str, args: argparse.Namespace, work_dir: Path, train_set: ImageDataset, held_out: ImageDataset
) -> RecipeResult:
    config = TrainConfig(
        dataset=args.dataset,
        data_path=args.data,
        name=f"bench-{recipe}",
        recipe=recipe,
        epochs=_EPOCHS_CEILING,
        batch_size=args.batch_size,
        seed=args.seed,
        store=work_dir / "store",
        run_dir=work_dir / "runs" / recipe,
    )
    meter = TimedThroughput(args.seconds, config.batch_size)
    logger.info("training recipe %r for %.0f s", recipe, args.seconds)
    result = train(config, callbacks=[meter])
    if result.version_dir is None:
        raise RuntimeError(f"recipe {recipe!r} published nothing")
    evaluation = evaluate_version(
        result.version_dir,
        train=train_set,
        held_out=held_out,
        num_samples=args.samples,
        cache_dir=args.cache_dir,
        seed=args.seed,
    )
    epochs_seen = meter.steps * config.batch_size / len(train_set)
    return RecipeResult(config, meter.steps, meter.images_per_second, epochs_seen, evaluation)


def format_table(results: Sequence[RecipeResult]) -> str:
    """One markdown row per recipe, then the first recipe's numbers divided by the second's."""
    lines = [
        "| recipe | optimizer | EMA | steps | epochs | train images/s | FID (lower is better) | IS |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        config = result.config
        ema = f"{config.ema_decay:g}" if config.ema_decay > 0 else "none"
        lines.append(
            f"| {config.recipe} | Adam(g {config.lr_g:g}, d {config.lr_d:g}, beta_1 {config.beta_1:g}) | {ema} "
            f"| {result.steps} | {result.epochs_seen:.2f} | {result.images_per_second:.1f} "
            f"| {result.evaluation.fid:.3f} | {result.evaluation.inception_score:.3f} |"
        )
    if len(results) == 2:
        ours, theirs = results
        lines.append(
            f"| {ours.config.recipe} / {theirs.config.recipe} | | | {_ratio(ours.steps, theirs.steps)} | "
            f"| {_ratio(ours.images_per_second, theirs.images_per_second)} "
            f"| {_ratio(ours.evaluation.fid, theirs.evaluation.fid)} "
            f"| {_ratio(ours.evaluation.inception_score, theirs.evaluation.inception_score)} |"
        )
    reference = results[0].evaluation
    if reference.real_fid is not None and reference.real_inception_score is not None:
        lines.append("")
        lines.append(
            f"Real held-out {reference.dataset} images at the same sample count: FID {reference.real_fid:.3f}, "
            f"IS {reference.real_inception_score:.3f}."
        )
    return "\n".join(lines)


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "-"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="MNIST as a Keras-format .npz (or IDX folder); without it, 'shapes'")
    parser.add_argument("--dataset", help="dataset spec (default: mnist with --data, else shapes)")
    parser.add_argument(
        "--seconds", type=float, default=120.0, help="training time per recipe (default: %(default)s)"
    )
    parser.add_argument(
        "--samples", type=int, default=2000, help="images scored per recipe (default: %(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="default: %(default)s (the tutorial's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, help="where the scoring classifier is cached")
    parser.add_argument(
        "--work-dir", type=Path, help="keep runs and the store here (default: a temporary folder)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.dataset = args.dataset or ("mnist" if args.data else "shapes")
    if args.seconds <= 0:
        raise SystemExit("python -m bench train: error: --seconds must be positive")
    train_set = load_dataset(args.dataset, data_path=args.data, seed=args.seed)
    held_out = load_dataset(args.dataset, data_path=args.data, split="test", seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="genserve-bench-") as scratch:
        work_dir = args.work_dir or Path(scratch)
        results = [run_recipe(recipe, args, work_dir, train_set, held_out) for recipe in RECIPES]
    print(format_table(results))
    return 0
