"""``python -m training {train,export,evaluate}``: parse arguments into `TrainConfig` and call the library.

TensorFlow is imported only once a command runs, so ``--help`` and argument errors answer at once, and
so that its C++ start-up messages (CUDA probing, oneDNN notices) and log lines can be hidden first
(`genserve.console`), unless ``--verbose`` is given or TF_CPP_MIN_LOG_LEVEL is already set.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genserve.console import quiet_tensorflow
from genserve.outputs import OUTPUT_RANGES
from training.fid import DEFAULT_NUM_SAMPLES
from training.text.cli import MODEL as TEXT_MODEL
from training.train_options import (
    TRAIN_DEFAULTS,
    add_train_arguments,
    parse_latent_scale,
    train_config_from_args,
)

logger = logging.getLogger("training")

EXIT_BAD_ARGUMENTS = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's own start-up and runtime messages"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,export,import,evaluate}")
    add_train_arguments(commands.add_parser("train", help="train a model and publish it to the model store"))
    _add_export(commands.add_parser("export", help="publish a run's checkpoint to the model store"))
    _add_import(
        commands.add_parser(
            "import",
            help="publish a generator trained elsewhere (.keras, .h5 or SavedModel) to the model store",
        )
    )
    _add_evaluate(commands.add_parser("evaluate", help="score a published version (FID, Inception Score)"))
    return parser


def _latent_scales(text: str) -> list[float]:
    return [parse_latent_scale(part) for part in text.split(",")]


def _add_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        type=Path,
        metavar="RUN_DIR_OR_CHECKPOINT",
        help="a run folder (its last checkpoint), RUN_DIR/best (the epoch with the lowest --eval-every FID) "
        "or a checkpoint prefix such as RUN_DIR/checkpoints/ckpt-940",
    )
    parser.add_argument("--store", type=Path, default=TRAIN_DEFAULTS.store, help="default: %(default)s")
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
        type=parse_latent_scale,
        default=1.0,
        help="GANs: multiply the served N(0, I) latents by this before the generator (default: %(default)s; "
        "`evaluate --latent-scales` shows which is best)",
    )


def _add_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        type=Path,
        metavar="MODEL",
        help="a Keras .keras file, a Keras 2 .h5 file or a SavedModel folder",
    )
    parser.add_argument("--name", required=True, help="model name in the store")
    parser.add_argument("--store", type=Path, default=TRAIN_DEFAULTS.store, help="default: %(default)s")
    parser.add_argument(
        "--signature",
        default="serving_default",
        help="a SavedModel's signature to serve (default: %(default)s)",
    )
    parser.add_argument("--label-input", help="the name of a class input, which makes the model conditional")
    parser.add_argument("--classes", type=int, help="how many classes the class input takes")
    parser.add_argument("--class-names", type=_names, help="the classes' names, in label order: a,b,c")
    parser.add_argument(
        "--encoder",
        type=Path,
        help="a VAE's encoder (image to mean and log-variance): the model is its decoder",
    )
    parser.add_argument(
        "--output-range",
        choices=("auto", *OUTPUT_RANGES),
        default="auto",
        help="the pixel range the model outputs: tanh [-1, 1], sigmoid [0, 1] or uint8 [0, 255] (default: found "
        "by calling it on standard-normal latents)",
    )
    parser.add_argument(
        "--custom-objects",
        type=Path,
        metavar="FILE.py",
        help="a Python file defining the model's custom layers",
    )
    _add_scoring(parser, dataset_required=False)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version_dir", type=Path, metavar="VERSION_DIR")
    _add_scoring(parser, dataset_required=True)
    parser.add_argument(
        "--latent-scales",
        type=_latent_scales,
        metavar="S1,S2,...",
        help="GANs: score the version at each of these latent scales (one row each) instead of as published, "
        "and store nothing; pass a --seed other than the one you judge the published version on",
    )


def _add_scoring(parser: argparse.ArgumentParser, *, dataset_required: bool) -> None:
    """The options of scoring a version against a dataset (`evaluate`, and `import` when given --dataset)."""
    parser.add_argument(
        "--dataset",
        required=dataset_required,
        help="the dataset the model was trained on" + ("" if dataset_required else ", to score it against"),
    )
    parser.add_argument("--data", dest="data_path", help="where the dataset's files are, if not downloaded")
    parser.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_NUM_SAMPLES,
        help="generated images to score (default: %(default)s)",
    )
    parser.add_argument("--cache-dir", type=Path, help="where the scoring classifier is cached")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")


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


def _run_import(args: argparse.Namespace) -> None:
    _load_tensorflow(args)
    from training.importer import ImportOptions, import_generator

    options = ImportOptions(
        name=args.name,
        store=args.store,
        signature=args.signature,
        label_input=args.label_input,
        classes=args.classes,
        class_names=args.class_names,
        encoder=args.encoder,
        output_range=args.output_range,
        custom_objects=args.custom_objects,
        dataset=args.dataset or ImportOptions.dataset,
    )
    version_dir = import_generator(args.path, options)
    if args.dataset:
        from training.evaluate_cli import evaluate_command

        evaluate_command(version_dir, **_scoring_options(args))
    print(version_dir)


def _scoring_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "dataset": args.dataset,
        "data_path": args.data_path,
        "num_samples": args.samples,
        "cache_dir": args.cache_dir,
        "seed": args.seed,
    }


def _run_evaluate(args: argparse.Namespace) -> None:
    _load_tensorflow(args)
    from genserve.store import read_metadata

    if read_metadata(args.version_dir).is_text:
        from training.text.evaluate import evaluate_version

        print(evaluate_version(args.version_dir, data_path=args.data_path).model_dump_json(indent=2))
        return
    from training.evaluate_cli import evaluate_command, sweep_command

    options = _scoring_options(args)
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


_COMMANDS = {"train": _run_train, "export": _run_export, "import": _run_import, "evaluate": _run_evaluate}


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
