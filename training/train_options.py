"""The options of `python -m training train` (and the parsers of their values), filled into a `TrainConfig`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

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
    parser.add_argument("--epochs", type=int, default=d.epochs, help="total epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="default: %(default)s")
    parser.add_argument("--latent-dim", type=int, default=d.latent_dim, help="default: %(default)s")
    parser.add_argument(
        "--lr-g", type=float, default=d.lr_g, help="generator learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--lr-d", type=float, default=d.lr_d, help="discriminator learning rate (default: %(default)s)"
    )
    parser.add_argument("--beta-1", type=float, default=d.beta_1, help="Adam beta_1 (default: %(default)s)")
    parser.add_argument(
        "--recipe",
        choices=RECIPES,
        default=d.recipe,
        help="'tutorial' pins the TF tutorial's optimizer settings",
    )
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=d.ema_decay,
        help="generator weight averaging, 0 disables (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=parse_seed,
        default=d.seed,
        help="'none' for an unseeded, non-deterministic run (default: %(default)s)",
    )
    parser.add_argument("--image-size", type=int, help="resize images to 28, 32 or 64 pixels")
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
    parser.add_argument(
        "--jit-compile",
        action=argparse.BooleanOptionalAction,
        default=d.jit_compile,
        help="compile the training step with XLA (default: %(default)s)",
    )
    parser.add_argument(
        "--mixed-precision",
        action=argparse.BooleanOptionalAction,
        default=d.mixed_precision,
        help="compute in bfloat16, keep weights in float32 (default: %(default)s)",
    )
    add_distribute_option(parser, d.distribute)
    gan = parser.add_argument_group("GAN recipe options (dcgan, cdcgan)")
    gan.add_argument("--loss", choices=GAN_LOSSES, default=d.loss, help="default: %(default)s")
    gan.add_argument(
        "--label-smoothing",
        type=float,
        default=d.label_smoothing,
        help="one-sided: real targets become 1 - this (bce loss only; default: %(default)s)",
    )
    gan.add_argument(
        "--spectral-norm",
        action=argparse.BooleanOptionalAction,
        default=d.spectral_norm,
        help="spectral normalisation of the discriminator (default: %(default)s)",
    )
    gan.add_argument(
        "--diffaugment",
        default=d.diffaugment,
        metavar="POLICIES",
        help=f"DiffAugment policies, comma-separated subset of {','.join(DIFFAUGMENT_POLICIES)} (default: none)",
    )
    gan.add_argument(
        "--r1-gamma",
        type=float,
        default=d.r1_gamma,
        help="R1 penalty weight on real images, 0 turns it off (default: %(default)s)",
    )
    gan.add_argument(
        "--r1-interval",
        type=int,
        default=d.r1_interval,
        help="apply R1 every this many steps, weighted by it (lazy regularisation; default: %(default)s)",
    )
    gan.add_argument(
        "--mode-seeking",
        type=float,
        default=d.mode_seeking,
        metavar="WEIGHT",
        help="weight of a mode-seeking term in the generator's loss (Mao et al. 2019): images should differ as "
        "much as their latents do, within a class for a cdcgan; 0 turns it off (default: %(default)s)",
    )
    gan.add_argument(
        "--d-width",
        type=float,
        default=d.d_width,
        help="multiplier of the discriminator's filter counts (default: %(default)s)",
    )
    gan.add_argument(
        "--conditioning",
        choices=CONDITIONINGS,
        help=f"how a cdcgan's discriminator sees the class (default: {DEFAULT_CONDITIONING})",
    )
    progress = parser.add_argument_group("progress and limits")
    progress.add_argument(
        "--eval-every",
        type=int,
        default=d.eval_every,
        metavar="K",
        help="every K epochs, FID and class score of --eval-samples images into history.json (default: off)",
    )
    progress.add_argument("--eval-samples", type=int, default=d.eval_samples, help="default: %(default)s")
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
    vae.add_argument(
        "--kl-weight", type=float, default=d.kl_weight, help="beta of a beta-VAE (default: %(default)s)"
    )
    vae.add_argument(
        "--latent-prior",
        choices=LATENT_PRIORS,
        help="sample the standard normal, or a normalizing flow of it fit to the encoded training images "
        f"after the VAE; with --time-budget the flow gets the last {1 - VAE_BUDGET_SHARE_WITH_PRIOR:.0%}% "
        f"(default: {DEFAULT_VAE_PRIOR})",
    )
    vae.add_argument(
        "--prior-epochs",
        type=int,
        default=d.prior_epochs,
        help="epochs of fitting the flow prior (default: %(default)s)",
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
