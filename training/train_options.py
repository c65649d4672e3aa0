"""The options of `python -m training train` (and the parsers of their values), filled into a `TrainConfig`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from genserve.conventions import SUPPORTED_CHANNELS
from genserve.store import check_latent_scale
from training.config import TrainConfig
from training.options import (
    AUTO_LATENT_SCALE,
    CONDITIONINGS,
    DEFAULT_CONDITIONING,
    DEFAULT_VAE_PRIOR,
    DIFFAUGMENT_POLICIES,
    DISTRIBUTE_MODES,
    GAN_LOSSES,
    LATENT_PRIORS,
    MODELS,
    PUBLISH_CHOICES,
    RECIPES,
    VAE_BUDGET_SHARE_WITH_PRIOR,
)

TRAIN_DEFAULTS = TrainConfig(dataset="mnist", name="defaults")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    d = TRAIN_DEFAULTS
    parser.add_argument("--model", choices=MODELS, default=d.model)
    parser.add_argument(
        "--dataset", required=True, help="mnist, fashion_mnist, shapes, folder:PATH or npz:PATH"
    )
    parser.add_argument("--name", required=True, help="model name in the store, e.g. mnist-dcgan")
    parser.add_argument(
        "--store", type=Path, default=d.store, help="model store folder (default: %(default)s)"
    )
    parser.add_argument("--data", dest="data_path", help="where the dataset's files are, if not downloaded")
    for flag, kind, help in _NUMBERS:
        _add_number(parser, flag, kind, help)
    parser.add_argument(
        "--recipe",
        choices=RECIPES,
        default=d.recipe,
        help="'tutorial' pins the TF tutorial's optimizer settings",
    )
    parser.add_argument(
        "--seed",
        type=parse_seed,
        default=d.seed,
        help="'none' for an unseeded, non-deterministic run (default: %(default)s)",
    )
    parser.add_argument("--image-size", type=int, help="resize images to 28, 32, 64 or 128 pixels")
    parser.add_argument(
        "--channels", type=int, choices=SUPPORTED_CHANNELS, help="convert images to 1 or 3 channels"
    )
    parser.add_argument("--limit", type=int, help="use only the first N training images")
    parser.add_argument("--run-dir", type=Path, help="checkpoints, samples and history (default: runs/NAME)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    parser.add_argument("--no-export", dest="export", action="store_false", help="do not publish at the end")
    parser.add_argument(
        "--no-ema-export", dest="export_ema", action="store_false", help="publish the raw generator"
    )
    _add_switch(parser, "--jit-compile", "compile the training step with XLA")
    _add_switch(parser, "--mixed-precision", "compute in bfloat16, keep weights in float32")
    _add_number(parser, "--ema-decay", float, "generator weight averaging, 0 disables")
    add_distribute_option(parser, d.distribute)
    gan = parser.add_argument_group("GAN recipe options (dcgan, cdcgan)")
    gan.add_argument("--loss", choices=GAN_LOSSES, default=d.loss, help="default: %(default)s")
    _add_number(gan, "--label-smoothing", float, "one-sided: real targets become 1 - this (bce loss only)")
    _add_switch(gan, "--spectral-norm", "spectral normalisation of the discriminator")
    gan.add_argument(
        "--diffaugment",
        default=d.diffaugment,
        metavar="POLICIES",
        help=f"DiffAugment policies, comma-separated subset of {','.join(DIFFAUGMENT_POLICIES)} (default: none)",
    )
    _add_number(
        gan,
        "--mode-seeking",
        float,
        "weight of a mode-seeking term in the generator's loss (Mao et al. 2019): images should differ as much "
        "as their latents do, within a class for a cdcgan; 0 turns it off",
        metavar="WEIGHT",
    )
    for flag, kind, help in _GAN_NUMBERS:
        _add_number(gan, flag, kind, help)
    gan.add_argument(
        "--conditioning",
        choices=CONDITIONINGS,
        help=f"how a cdcgan's discriminator sees the class (default: {DEFAULT_CONDITIONING})",
    )
    gan.add_argument(
        "--pseudo-classes",
        type=int,
        default=d.pseudo_classes,
        metavar="K",
        help="a cdcgan on images without labels: K k-means clusters of the images are its classes (the dataset's "
        "labels are never read), and it is published unconditionally (default: 0, the dataset's labels)",
    )
    gan.add_argument(
        "--recluster-every",
        type=int,
        default=d.recluster_every,
        metavar="E",
        help="with --pseudo-classes: every E epochs the clusters are found again in the discriminator's features "
        "(a self-conditioned GAN; default: 0, the first clusters kept)",
    )
    progress = parser.add_argument_group("progress and limits")
    progress.add_argument(
        "--eval-every",
        type=int,
        default=d.eval_every,
        metavar="K",
        help="every K epochs, FID and class score of --eval-samples images into history.json (default: off)",
    )
    _add_number(progress, "--eval-samples", int, "images scored at each --eval-every")
    progress.add_argument(
        "--publish",
        choices=PUBLISH_CHOICES,
        default=d.publish,
        help="publish the last epoch, or the one whose --eval-every FID was lowest (kept in RUN_DIR/best) "
        "(default: %(default)s)",
    )
    progress.add_argument(
        "--latent-scale",
        type=parse_train_latent_scale,
        default=d.latent_scale,
        metavar="S|auto",
        help="GANs: publish a graph that multiplies its N(0, I) latents by S; 'auto' scores a few scales from "
        "0.8 to 1.4 on the version about to be published (--eval-samples images, the next seed) and takes the lowest "
        "FID; needs labelled data (default: %(default)s)",
    )
    add_time_budget_option(progress)
    vae = parser.add_argument_group("VAE options")
    _add_number(vae, "--kl-weight", float, "beta of a beta-VAE")
    vae.add_argument(
        "--latent-prior",
        choices=LATENT_PRIORS,
        help="sample the standard normal, or a normalizing flow of it fit to the encoded training images "
        f"after the VAE; with --time-budget the flow gets the last {1 - VAE_BUDGET_SHARE_WITH_PRIOR:.0%}% "
        f"(default: {DEFAULT_VAE_PRIOR})",
    )
    _add_number(vae, "--prior-epochs", int, "epochs of fitting the flow prior")


# Numeric options with a TrainConfig default of the same name: (flag, type, help without the default).
_NUMBERS: tuple[tuple[str, type, str], ...] = (
    ("--epochs", int, "total epochs"),
    ("--batch-size", int, "the global batch"),
    ("--latent-dim", int, "length of the generator's latent vectors"),
    ("--lr-g", float, "generator learning rate"),
    ("--lr-d", float, "discriminator learning rate"),
    ("--beta-1", float, "Adam beta_1"),
)
_GAN_NUMBERS: tuple[tuple[str, type, str], ...] = (
    ("--r1-gamma", float, "R1 penalty weight on real images, 0 turns it off"),
    ("--r1-interval", int, "apply R1 every this many steps, weighted by it (lazy regularisation)"),
    ("--d-width", float, "multiplier of the discriminator's filter counts"),
)


_Parser = argparse.ArgumentParser | argparse._ArgumentGroup


def _default_of(flag: str) -> Any:
    """TrainConfig's default for the field an option fills (`--lr-g` fills `lr_g`)."""
    return getattr(TRAIN_DEFAULTS, flag.removeprefix("--").replace("-", "_"))


def _add_number(parser: _Parser, flag: str, kind: type, help: str, **extra: Any) -> None:
    """A numeric option whose default is TrainConfig's field of the same name."""
    parser.add_argument(
        flag, type=kind, default=_default_of(flag), help=f"{help} (default: %(default)s)", **extra
    )


def _add_switch(parser: _Parser, flag: str, help: str) -> None:
    """`--flag` / `--no-flag` for a TrainConfig field of the same name."""
    parser.add_argument(
        flag,
        action=argparse.BooleanOptionalAction,
        default=_default_of(flag),
        help=f"{help} (default: %(default)s)",
    )


def parse_seed(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None


def parse_latent_scale(text: str) -> float:
    try:
        value = float(text)
        check_latent_scale(value, "dcgan")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    return value


def parse_train_latent_scale(text: str) -> float | str:
    return AUTO_LATENT_SCALE if text == AUTO_LATENT_SCALE else parse_latent_scale(text)


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig a parsed ``train`` command line describes (each flag's dest is a TrainConfig field)."""
    given = vars(args)
    return TrainConfig(
        **{item.name: given[item.name] for item in dataclasses.fields(TrainConfig) if item.name in given}
    )


def add_time_budget_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--time-budget`, as every trainer's command line offers it (`training.run.TimeBudget`)."""
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="MINUTES",
        help="stop before an epoch that would end past this much wall time (the first always runs), then "
        "publish as usual",
    )


def add_distribute_option(parser: argparse.ArgumentParser, default: str) -> None:
    """`--distribute`, as every trainer's command line offers it."""
    parser.add_argument(
        "--distribute",
        choices=DISTRIBUTE_MODES,
        default=default,
        help="train on several devices ('mirrored') or machines ('multi-worker', from TF_CONFIG); 'auto' "
        "mirrors over the GPUs when there are several; --batch-size is the global batch (default: %(default)s)",
    )
