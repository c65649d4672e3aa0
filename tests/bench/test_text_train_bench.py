"""The text-recipe comparison: its runs' command lines are the train CLI's, and its verdict needs every seed."""

from __future__ import annotations

from pathlib import Path

from bench.text_train_bench import VARIANTS, Result, _command, _config, report
from training.text.cli import build_parser, config_from_args


def test_every_variant_is_a_command_line_the_train_cli_accepts(tmp_path: Path) -> None:
    for variant in VARIANTS.values():
        values = _config(variant, 1, 12.0, None, tmp_path)
        command = _command(values)
        assert command[1:6] == ["-m", "training", "train", "--model", "char-rnn"]
        config = config_from_args(build_parser().parse_args(["train", *command[6:]]))
        assert config.time_budget == 12.0 and config.seed == 1
        for field, value in variant.changes.items():
            assert getattr(config, field) == value


def test_a_variant_beats_the_baseline_only_under_every_seed() -> None:
    variants = [VARIANTS["gru"], VARIANTS["gru_lr5e3"], VARIANTS["mingru_cosine"]]
    bits = {"gru": (2.50, 2.52), "gru_lr5e3": (2.40, 2.45), "mingru_cosine": (2.40, 2.60)}
    results = [Result(name, seed, bits[name][seed], 2, 720.0) for name in bits for seed in (0, 1)]

    table = report(results, variants, [0, 1], "12 minutes each")

    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert rows["gru"].endswith("| — |")
    assert rows["gru_lr5e3"].endswith("| yes |") and "2.425" in rows["gru_lr5e3"]
    assert rows["mingru_cosine"].endswith("| no |") and "0.200" in rows["mingru_cosine"]
