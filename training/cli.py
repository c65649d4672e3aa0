"""``python -m training {train,export,evaluate}``: parse arguments into `TrainConfig` and call the library.

TensorFlow is imported only once a command runs, so ``--help`` and argument errors answer at once, and
so that its C++ start-up messages (CUDA probing, oneDNN notices) and log lines can be hidden first
(`genserve.console`), unless ``--verbose`` is given or TF_CPP_MIN_LOG_LEVEL is already set.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from genserve.console import quiet_tensorflow
from genserve.conventions import SUPPORTED_CHANNELS
from genserve.store import check_latent_scale
from training.config import TrainConfig, add_distribute_option, add_time_budget_option
from training.fid import DEFAULT_NUM_SAMPLES
from training.options import (
    AUTO_LATENT_SCALE,
    CONDITIONINGS,
    DEFAULT_CONDITIONING,
    DEFAULT_VAE_PRIOR,
    DIFFAUGMENT_POLICIES,
    GAN_LOSSES,
    LATENT_PRIORS,
    MODELS,
    PUBLISH_CHOICES,
    RECIPES,
    VAE_BUDGET_SHARE_WITH_PRIOR,
)
from training.text.cli import MODEL as TEXT_MODEL

logger = logging.getLogger("training")

EXIT_BAD_ARGUMENTS = 2
EXIT_INTERRUPTED = 130

_TRAIN_DEFAULTS = TrainConfig(dataset="mnist", name="defaults")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's own start-up and runtime messages"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,export,evaluate}")
    _add_train(commands.add_parser("train", help="train a model and publish it to the model store"))
    _add_export(commands.add_parser("export", help="publish a run's checkpoint to the model store"))
    _add_evaluate(commands.add_parser("evaluate", help="score a published version (FID, Inception Score)"))
    return parser


def _add_train(parser: argparse.ArgumentParser) -> None:
    d = _TRAIN_DEFAULTS
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
        type=_seed,
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
        type=_train_latent_scale,
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


def _seed(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None


def _latent_scale(text: str) -> float:
    try:
        value = float(text)
        check_latent_scale(value, "dcgan")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    return value


def _train_latent_scale(text: str) -> float | str:
    return AUTO_LATENT_SCALE if text == AUTO_LATENT_SCALE else _latent_scale(text)


def _latent_scales(text: str) -> list[float]:
    return [_latent_scale(part) for part in text.split(",")]


def _add_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        type=Path,
        metavar="RUN_DIR_OR_CHECKPOINT",
        help="a run folder (its last checkpoint), RUN_DIR/best (the epoch with the lowest --eval-every FID) "
        "or a checkpoint prefix such as RUN_DIR/checkpoints/ckpt-940",
    )
    parser.add_argument("--store", type=Path, default=_TRAIN_DEFAULTS.store, help="default: %(default)s")
    parser.add_argument("--name", help="model name in the store (default: the run's name)")
    parser.add_argument("--no-ema", dest="use_ema", action="store_false", help="publish the raw generator")
    parser.add_argument(
        "--unconditional",
        action="store_true",
        help="publish a cdcgan run as an unconditional model: each latent's first coordinate picks the class, "
        "every class equally often",
    )
    parser.add_argument(
        "--latent-scale",
        type=_latent_scale,
        default=1.0,
        help="GANs: multiply the served N(0, I) latents by this before the generator (default: %(default)s; "
        "`evaluate --latent-scales` shows which is best)",
    )


def _add_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version_dir", type=Path, metavar="VERSION_DIR")
    parser.add_argument("--dataset", required=True, help="the dataset the model was trained on")
    parser.add_argument("--data", dest="data_path", help="where the dataset's files are, if not downloaded")
    parser.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_NUM_SAMPLES,
        help="generated images to score (default: %(default)s)",
    )
    parser.add_argument("--cache-dir", type=Path, help="where the scoring classifier is cached")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument(
        "--latent-scales",
        type=_latent_scales,
        metavar="S1,S2,...",
        help="GANs: score the version at each of these latent scales (one row each) instead of as published, "
        "and store nothing; pass a --seed other than the one you judge the published version on",
    )


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig a parsed ``train`` command line describes (each flag's dest is a TrainConfig field)."""
    given = vars(args)
    return TrainConfig(
        **{item.name: given[item.name] for item in dataclasses.fields(TrainConfig) if item.name in given}
    )


def _run_train(args: argparse.Namespace) -> None:
    config = train_config_from_args(args)
    _load_tensorflow(args)
    from training.train import train

    result = train(config)
    where = f"published {result.version_dir}" if result.version_dir else "not exported"
    logger.info("trained %d epochs in %s; %s", result.epochs_completed, result.run_dir, where)


def _run_export(args: argparse.Namespace) -> None:
    _load_tensorflow(args)
    from training.export import export_checkpoint

    version_dir = export_checkpoint(
        args.path,
        args.store,
        name=args.name,
        use_ema=args.use_ema,
        unconditional=args.unconditional,
        latent_scale=args.latent_scale,
    )
    print(version_dir)


def _run_evaluate(args: argparse.Namespace) -> None:
    _load_tensorflow(args)
    from genserve.store import read_metadata

    if read_metadata(args.version_dir).is_text:
        from training.text.evaluate import evaluate_version

        print(evaluate_version(args.version_dir, data_path=args.data_path).model_dump_json(indent=2))
        return
    from training.evaluate_cli import evaluate_command, sweep_command

    options = {
        "dataset": args.dataset,
        "data_path": args.data_path,
        "num_samples": args.samples,
        "cache_dir": args.cache_dir,
        "seed": args.seed,
    }
    if args.latent_scales:
        sweep_command(args.version_dir, args.latent_scales, **options)
    else:
        evaluate_command(args.version_dir, **options)


def _text_train_options(arguments: list[str]) -> list[str] | None:
    """The options after ``train`` when they ask for the text model (``--model char-rnn``), else None.

    Text models have options of their own (cell, units, sequence length, ...), so their parser takes over.
    """
    if not arguments or arguments[0] != "train":
        return None
    options = arguments[1:]
    pairs = zip(options, [*options[1:], ""], strict=True)
    if f"--model={TEXT_MODEL}" in options or any(
        key == "--model" and value == TEXT_MODEL for key, value in pairs
    ):
        return options
    return None


def _load_tensorflow(args: argparse.Namespace) -> None:
    """Import TensorFlow before the library does: quietly, unless --verbose."""
    if not args.verbose:
        quiet_tensorflow()


_COMMANDS = {"train": _run_train, "export": _run_export, "evaluate": _run_evaluate}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; bad input exits with status 2 and a one-line message instead of a traceback."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    text_options = _text_train_options(arguments)
    if text_options is not None:
        from training.text.cli import train_main

        return train_main(text_options)
    parser = build_parser()
    args = parser.parse_args(arguments)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for chatty in ("absl", "tensorflow"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        _COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as error:
        print(f"{parser.prog} {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _one_line(error: Exception) -> str:
    """The error's message; a failed metadata check gives its own messages, not pydantic's report."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return "; ".join(str(item["msg"]).removeprefix("Value error, ") for item in error.errors())
    return str(error)
