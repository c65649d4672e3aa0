"""Training recipes side by side on this machine: ours against the TF tutorial's, or ours with some changes.

Every variant trains on the same data and differs from the genserve recipe as `VARIANTS` says; the first
variant named is the baseline the others are compared with. Each gets either ``--seconds`` of training (equal
wall time, the budget a user actually has) or exactly ``--epochs`` epochs (equal work), under every seed of
``--seeds``; its throughput is measured after the first (compiling) step, and its published generator is then
scored with the evaluation classifier (FID and Inception Score, lower and higher is better). With several
seeds the table gives each seed's FID, their mean and spread, and whether the variant beat the baseline's FID
under every seed, the bar for a switch to become a default.

    python -m bench train [--data mnist.npz] [--variants tutorial,genserve] [--seconds 120 | --epochs 3]
                          [--seeds 0,1] [--mixed-precision] [--samples 2000] [--out table.md]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from genserve.store import EvaluationRecord
from training.classifier import LABEL_ACCURACY
from training.config import TrainConfig
from training.datasets import ImageDataset, load_dataset
from training.evaluate import evaluate_version
from training.export import export_checkpoint
from training.train import train

logger = logging.getLogger(__name__)

_EPOCHS_CEILING = 10_000  # with --seconds the time budget, not the epoch count, ends each run
_DEFAULT_SECONDS = 120.0


@dataclass(frozen=True)
class Variant:
    """A named recipe: the genserve defaults with `changes` applied to the `TrainConfig`.

    An `unconditional` variant trains a conditional model and is scored as published with ``--unconditional``.
    """

    name: str
    description: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    unconditional: bool = False


_BATCH256_RECIPE: dict[str, Any] = {"batch_size": 256, "d_width": 1.0, "r1_gamma": 0.0}

# One change each, except the last three, which compare whole recipes. Label smoothing 0.1 is the 0.9 real target of Salimans et al. (2016) and of Goodfellow's
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
        Variant(
            "batch256",
            "batch 256, tutorial-width discriminator, no R1 (the recipe of mnist-dcgan v3)",
            _BATCH256_RECIPE,
        ),
        Variant("wide_b64", "batch 64, discriminator 2x wide, no R1", {"batch_size": 64, "d_width": 2.0}),
        Variant(
            "r1_wide_b64",
            "batch 64, discriminator 2x wide, lazy R1 gamma 0.1",
            {"batch_size": 64, "d_width": 2.0, "r1_gamma": 0.1},
        ),
        Variant(
            "cdcgan_concat",
            "cdcgan, the class concatenated to the discriminator's input",
            {"model": "cdcgan", "conditioning": "concat"},
        ),
        Variant(
            "cdcgan_projection",
            "cdcgan with a projection discriminator (the class embedding's inner product with its features)",
            {"model": "cdcgan", "conditioning": "projection"},
        ),
        Variant(
            "labels",
            "cdcgan with a projection discriminator, published unconditionally (the latent picks the class)",
            {"model": "cdcgan", "conditioning": "projection"},
            unconditional=True,
        ),
        Variant(
            "pseudo_classes",
            "cdcgan with a projection discriminator on 10 pseudo-classes (k-means clusters of the images; the "
            "labels are never read), published unconditionally",
            {"model": "cdcgan", "conditioning": "projection", "pseudo_classes": 10},
        ),
        Variant(
            "pseudo_classes_mode_seeking",
            "the pseudo_classes variant with the mode-seeking term (weight 1)",
            {"model": "cdcgan", "conditioning": "projection", "pseudo_classes": 10, "mode_seeking": 1.0},
        ),
        Variant(
            "pseudo_classes_20_mode_seeking",
            "the pseudo_classes_mode_seeking variant with 20 clusters",
            {"model": "cdcgan", "conditioning": "projection", "pseudo_classes": 20, "mode_seeking": 1.0},
        ),
        Variant(
            "self_conditioned_mode_seeking",
            "the pseudo_classes_mode_seeking variant re-clustered every 4 epochs in the discriminator's features "
            "(a self-conditioned GAN)",
            {
                "model": "cdcgan",
                "conditioning": "projection",
                "pseudo_classes": 10,
                "mode_seeking": 1.0,
                "recluster_every": 4,
            },
        ),
        Variant(
            "labels_mode_seeking",
            "the labels variant with the mode-seeking term (weight 1) in the generator's loss",
            {"model": "cdcgan", "conditioning": "projection", "mode_seeking": 1.0},
            unconditional=True,
        ),
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
    seed: int
    config: TrainConfig
    steps: int
    images_per_second: float
    epochs_seen: float
    evaluation: EvaluationRecord


def variant_config(variant: Variant, args: argparse.Namespace, work_dir: Path, seed: int = 0) -> TrainConfig:
    """The `TrainConfig` a variant trains with under the benchmark's options and one of its seeds."""
    options: dict[str, Any] = {
        "dataset": args.dataset,
        "data_path": args.data,
        "name": f"bench-{variant.name}",
        "epochs": args.epochs or _EPOCHS_CEILING,
        "seed": seed,
        "mixed_precision": args.mixed_precision,
        "store": work_dir / "store",
        "run_dir": work_dir / "runs" / f"{variant.name}-seed{seed}",
    }
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    return TrainConfig(**(options | dict(variant.changes)))


def run_variant(
    variant: Variant,
    args: argparse.Namespace,
    work_dir: Path,
    train_set: ImageDataset,
    held_out: ImageDataset,
    seed: int = 0,
) -> VariantResult:
    config = variant_config(variant, args, work_dir, seed)
    meter = TimedThroughput(None if args.epochs else args.seconds, config.batch_size)
    budget = f"{args.epochs} epochs" if args.epochs else f"{args.seconds:.0f} s"
    logger.info("training variant %r (%s), seed %d, for %s", variant.name, variant.description, seed, budget)
    result = train(config, callbacks=[meter])
    if result.version_dir is None:
        raise RuntimeError(f"variant {variant.name!r} published nothing")
    version_dir = result.version_dir
    if variant.unconditional:
        version_dir = export_checkpoint(
            config.run_path, config.store, name=f"{config.name}-unconditional", unconditional=True
        )
    evaluation = evaluate_version(
        version_dir,
        train=train_set,
        held_out=held_out,
        num_samples=args.samples,
        cache_dir=args.cache_dir,
        seed=0,  # the same scored latents and reference images for every variant and training seed
    )
    logger.info(
        "variant %r, seed %d: FID %.3f, class score %.3f",
        variant.name,
        seed,
        evaluation.fid,
        evaluation.inception_score,
    )
    epochs_seen = meter.steps * config.batch_size / len(train_set)
    return VariantResult(variant, seed, config, meter.steps, meter.images_per_second, epochs_seen, evaluation)


def format_table(results: Sequence[VariantResult]) -> str:
    """One markdown row per variant, with its FID and class score divided by the first (baseline) variant's."""
    baseline = results[0]
    lines = [
        f"| variant | change | steps | epochs | train images/s | FID (lower is better) | class score "
        f"| FID / {baseline.variant.name} | class score / {baseline.variant.name} |",
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
    return "\n".join(lines + _real_images_note(baseline.evaluation))


def format_seed_table(results: Sequence[VariantResult]) -> str:
    """One markdown row per variant over every seed: FID per seed, mean and spread, and whether it won.

    The spread is half the range (max - min) / 2 of the per-seed FIDs. A variant "wins" when its FID is
    below the baseline's (the first variant's) under every seed, each seed against the same seed.
    """
    variants = list(dict.fromkeys(result.variant.name for result in results))
    seeds = sorted({result.seed for result in results})
    by_key = {(result.variant.name, result.seed): result for result in results}
    baseline = variants[0]
    seed_columns = " | ".join(f"FID seed {seed}" for seed in seeds)
    # Conditional models are also scored on how often their images are of the class asked for.
    accuracy = any(LABEL_ACCURACY in result.evaluation.details for result in results)
    lines = [
        f"| variant | change | {seed_columns} | FID mean ± half-range | class score mean "
        f"{'| requested class (mean) ' if accuracy else ''}| epochs (mean) "
        f"| images/s (mean) | beats {baseline} under every seed |",
        "|---|---|" + "---:|" * (len(seeds) + 4 + accuracy) + "---|",
    ]
    for name in variants:
        rows = [by_key[(name, seed)] for seed in seeds]
        fids = [row.evaluation.fid for row in rows]
        spread = (max(fids) - min(fids)) / 2
        wins = all(row.evaluation.fid < by_key[(baseline, row.seed)].evaluation.fid for row in rows)
        verdict = "(baseline)" if name == baseline else ("yes" if wins else "no")
        lines.append(
            f"| {name} | {rows[0].variant.description} | {' | '.join(f'{fid:.2f}' for fid in fids)} "
            f"| {statistics.mean(fids):.2f} ± {spread:.2f} "
            f"| {statistics.mean(row.evaluation.inception_score for row in rows):.2f} "
            f"{_mean_accuracy(rows) if accuracy else ''}"
            f"| {statistics.mean(row.epochs_seen for row in rows):.2f} "
            f"| {statistics.mean(row.images_per_second for row in rows):.0f} | {verdict} |"
        )
    return "\n".join(lines + _real_images_note(results[0].evaluation))


def _real_images_note(reference: EvaluationRecord) -> list[str]:
    """The lines under a table that give real held-out images' own scores, when the record has them."""
    if reference.real_fid is None or reference.real_inception_score is None:
        return []
    return [
        "",
        f"Real held-out {reference.dataset} images at the same sample count: FID {reference.real_fid:.3f}, "
        f"class score {reference.real_inception_score:.3f}.",
    ]


def _mean_accuracy(rows: Sequence[VariantResult]) -> str:
    """The table cell of a variant's mean label accuracy, "-" for a variant that takes no label."""
    values = [
        row.evaluation.details[LABEL_ACCURACY] for row in rows if LABEL_ACCURACY in row.evaluation.details
    ]
    return f"| {statistics.mean(values):.4f} " if values else "| - "


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "-"


def describe_run(args: argparse.Namespace, train_set: ImageDataset) -> str:
    """One line saying what every variant got, to head the table."""
    if args.epochs:
        budget = f"{args.epochs} epoch{'s' if args.epochs > 1 else ''}"
    else:
        budget = f"{args.seconds:g} s of training"
    precision = "mixed_bfloat16" if args.mixed_precision else "float32"
    seeds = ("seeds " if len(args.seeds) > 1 else "seed ") + ", ".join(str(seed) for seed in args.seeds)
    batch = args.batch_size or "of the recipe"
    return (
        f"Each variant: {budget} on {train_set.name} ({len(train_set)} images), batch {batch} unless the "
        f"variant sets it, {seeds}, {precision}; {args.samples} generated images scored."
    )


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds like 0,1, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"expected distinct non-negative seeds like 0,1, got {text!r}")
    return seeds


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
    parser.add_argument(
        "--batch-size", type=int, help="for every variant that does not set its own (default: the recipe's)"
    )
    parser.add_argument(
        "--seeds",
        "--seed",
        type=parse_seeds,
        default=[0],
        help="training seeds, comma-separated; every variant trains once per seed (default: 0)",
    )
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
    train_set = load_dataset(args.dataset, data_path=args.data, seed=0)
    held_out = load_dataset(args.dataset, data_path=args.data, split="test", seed=0)
    with tempfile.TemporaryDirectory(prefix="genserve-bench-") as scratch:
        work_dir = args.work_dir or Path(scratch)
        # Seed by seed, so an interrupted comparison still holds whole rounds of every variant.
        results = [
            run_variant(variant, args, work_dir, train_set, held_out, seed)
            for seed in args.seeds
            for variant in args.variants
        ]
    table = format_table(results) if len(args.seeds) == 1 else format_seed_table(results)
    report = f"{describe_run(args, train_set)}\n\n{table}\n"
    print(report, end="")
    if args.out is not None:
        args.out.write_text(report)
    return 0
