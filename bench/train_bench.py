"""Training recipes side by side on this machine: ours against the TF tutorial's, or ours with one change.

Every variant trains the same networks on the same data with the same seed and differs from the genserve
recipe in exactly one respect (see `VARIANTS`); the first variant named is the baseline the others are
divided by. Each gets either ``--seconds`` of training or exactly ``--epochs`` epochs (fixed work, which
keeps variants comparable when the machine's speed varies), its throughput is measured after the first
(compiling) step, and its published generator is then scored with the evaluation classifier (FID and
Inception Score, lower and higher is better).

    python -m bench train [--data mnist.npz] [--variants tutorial,genserve] [--seconds 120 | --epochs 3]
                          [--mixed-precision] [--samples 2000] [--out table.md]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from genserve.store import EvaluationRecord
from training.config import TrainConfig
from training.datasets import ImageDataset, load_dataset
from training.evaluate import evaluate_version
from training.train import train

logger = logging.getLogger(__name__)

_EPOCHS_CEILING = 10_000  # with --seconds the time budget, not the epoch count, ends each run
_DEFAULT_SECONDS = 120.0


@dataclass(frozen=True)
class Variant:
    """A named recipe: the genserve defaults with `changes` applied to the `TrainConfig`."""

    name: str
    description: str
    changes: Mapping[str, Any] = field(default_factory=dict)


# One change each. Label smoothing 0.1 is the 0.9 real target of Salimans et al. (2016) and of Goodfellow's
# GAN tutorial. DiffAugment uses translation+cutout, the paper's policy for its small-image (CIFAR-10)
# BigGAN runs; its colour jitter reduces to brightness and contrast on grayscale digits.
VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant("tutorial", "TF tutorial: Adam(1e-4, beta_1 0.9), no EMA", {"recipe": "tutorial"}),
        Variant("genserve", "Adam(2e-4, beta_1 0.5), EMA 0.999"),
        Variant("baseline", "genserve recipe as is"),
        Variant("label_smoothing", "one-sided label smoothing 0.1", {"label_smoothing": 0.1}),
        Variant("spectral_norm", "spectral norm in the discriminator", {"spectral_norm": True}),
        Variant("hinge", "hinge loss", {"loss": "hinge"}),
        Variant("diffaugment", "DiffAugment translation,cutout", {"diffaugment": "translation,cutout"}),
    )
}
DEFAULT_VARIANTS = ("tutorial", "genserve")


class TimedThroughput(keras.callbacks.Callback):
    """Measure images/s from the end of the first step to the last; stop after `seconds` unless None."""

    def __init__(self, seconds: float | None, batch_size: int) -> None:
        super().__init__()
        self.seconds = seconds
        self.batch_size = batch_size
        self.steps = 0
        self._deadline = 0.0
        self._first_step_end = 0.0
        self._last_step_end = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._deadline = time.monotonic() + self.seconds if self.seconds is not None else float("inf")

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
class VariantResult:
    variant: Variant
    config: TrainConfig
    steps: int
    images_per_second: float
    epochs_seen: float
    evaluation: EvaluationRecord


def variant_config(variant: Variant, args: argparse.Namespace, work_dir: Path) -> TrainConfig:
    """The `TrainConfig` a variant trains with under the benchmark's options."""
    options: dict[str, Any] = {
        "dataset": args.dataset,
        "data_path": args.data,
        "name": f"bench-{variant.name}",
        "epochs": args.epochs or _EPOCHS_CEILING,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "mixed_precision": args.mixed_precision,
        "store": work_dir / "store",
        "run_dir": work_dir / "runs" / variant.name,
    }
    return TrainConfig(**(options | dict(variant.changes)))


def run_variant(
    variant: Variant,
    args: argparse.Namespace,
    work_dir: Path,
    train_set: ImageDataset,
    held_out: ImageDataset,
) -> VariantResult:
    config = variant_config(variant, args, work_dir)
    meter = TimedThroughput(None if args.epochs else args.seconds, config.batch_size)
    budget = f"{args.epochs} epochs" if args.epochs else f"{args.seconds:.0f} s"
    logger.info("training variant %r (%s) for %s", variant.name, variant.description, budget)
    result = train(config, callbacks=[meter])
    if result.version_dir is None:
        raise RuntimeError(f"variant {variant.name!r} published nothing")
    evaluation = evaluate_version(
        result.version_dir,
        train=train_set,
        held_out=held_out,
        num_samples=args.samples,
        cache_dir=args.cache_dir,
        seed=args.seed,
    )
    logger.info("variant %r: FID %.3f, IS %.3f", variant.name, evaluation.fid, evaluation.inception_score)
    epochs_seen = meter.steps * config.batch_size / len(train_set)
    return VariantResult(variant, config, meter.steps, meter.images_per_second, epochs_seen, evaluation)


def format_table(results: Sequence[VariantResult]) -> str:
    """One markdown row per variant, with its FID and IS divided by the first (baseline) variant's."""
    baseline = results[0]
    lines = [
        f"| variant | change | steps | epochs | train images/s | FID (lower is better) | IS "
        f"| FID / {baseline.variant.name} | IS / {baseline.variant.name} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        evaluation = result.evaluation
        lines.append(
            f"| {result.variant.name} | {result.variant.description} | {result.steps} "
            f"| {result.epochs_seen:.2f} | {result.images_per_second:.1f} "
            f"| {evaluation.fid:.3f} | {evaluation.inception_score:.3f} "
            f"| {_ratio(evaluation.fid, baseline.evaluation.fid)} "
            f"| {_ratio(evaluation.inception_score, baseline.evaluation.inception_score)} |"
        )
    reference = baseline.evaluation
    if reference.real_fid is not None and reference.real_inception_score is not None:
        lines.append("")
        lines.append(
            f"Real held-out {reference.dataset} images at the same sample count: FID {reference.real_fid:.3f}, "
            f"IS {reference.real_inception_score:.3f}."
        )
    return "\n".join(lines)


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "-"


def describe_run(args: argparse.Namespace, train_set: ImageDataset) -> str:
    """One line saying what every variant got, to head the table."""
    if args.epochs:
        budget = f"{args.epochs} epoch{'s' if args.epochs > 1 else ''}"
    else:
        budget = f"{args.seconds:g} s of training"
    precision = "mixed_bfloat16" if args.mixed_precision else "float32"
    return (
        f"Each variant: {budget} on {train_set.name} ({len(train_set)} images), batch {args.batch_size}, "
        f"seed {args.seed}, {precision}; {args.samples} generated images scored."
    )


def parse_variants(text: str) -> list[Variant]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown variant {unknown[0] if unknown else text!r}: name a comma-separated list of "
            f"{', '.join(VARIANTS)} (the first is the baseline)"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a variant is named twice in {text!r}: each one trains once")
    return [VARIANTS[name] for name in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="MNIST as a Keras-format .npz (or IDX folder); without it, 'shapes'")
    parser.add_argument("--dataset", help="dataset spec (default: mnist with --data, else shapes)")
    parser.add_argument(
        "--variants",
        type=parse_variants,
        default=[VARIANTS[name] for name in DEFAULT_VARIANTS],
        help=f"comma-separated, the first is the baseline; from {', '.join(VARIANTS)} "
        f"(default: {','.join(DEFAULT_VARIANTS)})",
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--seconds", type=float, help=f"training time per variant (default: {_DEFAULT_SECONDS:g})"
    )
    budget.add_argument("--epochs", type=int, help="train every variant exactly this many epochs instead")
    parser.add_argument("--mixed-precision", action="store_true", help="train with mixed_bfloat16")
    parser.add_argument(
        "--samples", type=int, default=2000, help="images scored per variant (default: %(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="default: %(default)s (the tutorial's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, help="where the scoring classifier is cached")
    parser.add_argument(
        "--work-dir", type=Path, help="keep runs and the store here (default: a temporary folder)"
    )
    parser.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.dataset = args.dataset or ("mnist" if args.data else "shapes")
    if args.seconds is not None and args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.epochs is None and args.seconds is None:
        args.seconds = _DEFAULT_SECONDS
    train_set = load_dataset(args.dataset, data_path=args.data, seed=args.seed)
    held_out = load_dataset(args.dataset, data_path=args.data, split="test", seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="genserve-bench-") as scratch:
        work_dir = args.work_dir or Path(scratch)
        results = [run_variant(variant, args, work_dir, train_set, held_out) for variant in args.variants]
    report = f"{describe_run(args, train_set)}\n\n{format_table(results)}\n"
    print(report, end="")
    if args.out is not None:
        args.out.write_text(report)
    return 0
