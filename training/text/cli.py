"""``python -m training.text {train,evaluate}``: parse arguments into `TextTrainConfig` and call the library.

`train_main(argv)` is the train command alone, for another CLI to hand its arguments to (``python -m
training train --model char-rnn ...`` passes everything after ``train``; ``--model char-rnn`` is accepted);
`add_train_arguments(parser)` and `config_from_args(args)` are its parts. TensorFlow is imported only once a command runs, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from training.text.config import CELLS, LR_SCHEDULES, TextTrainConfig
from training.train_options import add_distribute_option, add_time_budget_option

logger = logging.getLogger("training.text")

EXIT_BAD_ARGUMENTS = 2
MODEL = "char-rnn"
_DEFAULTS = TextTrainConfig(dataset="grammar", name="defaults")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.text", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate}")
    add_train_arguments(
        commands.add_parser("train", help="train a char-rnn and publish it to the model store")
    )
    evaluate = commands.add_parser("evaluate", help="held-out bits per character of a published version")
    evaluate.add_argument("version", type=Path, help="a version folder, e.g. model_store/fortunes-rnn/1")
    evaluate.add_argument(
        "--data", dest="data_path", help="where the dataset is, if not where it was in training"
    )
    return parser


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `TextTrainConfig`, with its defaults."""
    d = _DEFAULTS
    parser.add_argument(
        "--dataset", required=True, help="text:PATH (file or folder of .txt), fortunes or grammar"
    )
    parser.add_argument("--name", required=True, help="model name in the store, e.g. fortunes-rnn")
    parser.add_argument(
        "--data", dest="data_path", help="location of a named dataset (fortunes: a folder or file)"
    )
    parser.add_argument(
        "--store", type=Path, default=d.store, help="model store folder (default: %(default)s)"
    )
    parser.add_argument("--run-dir", type=Path, help="run folder (default: runs/NAME)")
    parser.add_argument("--cell", choices=CELLS, default=d.cell)
    parser.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=d.lr_schedule,
        help="constant, or cosine: down to a tenth of --lr by the time budget or the last epoch "
        "(default: %(default)s)",
    )
    for flag, kind, help_text in (
        ("layers", int, "stacked recurrent layers"),
        ("units", int, "units per recurrent layer"),
        ("embedding-dim", int, "character embedding size"),
        ("sequence-length", int, "characters per training window (truncated backpropagation)"),
        ("dropout", float, "dropout after each recurrent layer"),
        ("batch-size", int, "windows per batch"),
        ("epochs", int, "passes over the training text"),
        ("lr", float, "Adam learning rate"),
        ("clip-norm", float, "global gradient-norm clip"),
        ("held-out", float, "share of documents kept for evaluation"),
        ("limit-chars", int, "use only the first N characters (quick runs)"),
        ("sample-length", int, "characters sampled into samples/ after every epoch"),
        ("seed", int, "seed of data order, initial weights and samples"),
    ):
        default = getattr(d, flag.replace("-", "_"))
        parser.add_argument(
            f"--{flag}", type=kind, default=default, help=f"{help_text} (default: %(default)s)"
        )
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    add_time_budget_option(parser)
    add_distribute_option(parser, d.distribute)


def train_main(argv: Sequence[str]) -> int:
    """Parse train options alone (as after ``train``), train and publish; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m training train --model char-rnn", description=__doc__)
    parser.add_argument("--model", choices=[MODEL], default=MODEL, help="the text generator's model name")
    add_train_arguments(parser)
    return _run(parser.parse_args(list(argv)), "train")


def config_from_args(args: argparse.Namespace) -> TextTrainConfig:
    fields = TextTrainConfig.__dataclass_fields__
    return TextTrainConfig(**{key: value for key, value in vars(args).items() if key in fields})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _run(args, args.command)


def _run(args: argparse.Namespace, command: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if command == "train":
            from training.text.train import train_text

            version = train_text(config_from_args(args))
            if version is not None:
                logger.info("published %s", version)
        else:
            from training.text.evaluate import evaluate_version

            record = evaluate_version(args.version, data_path=args.data_path)
            sys.stdout.write(json.dumps(record.model_dump(mode="json"), indent=2) + "\n")
    except ValueError as error:
        logger.error("%s", error)
        return EXIT_BAD_ARGUMENTS
    return 0
