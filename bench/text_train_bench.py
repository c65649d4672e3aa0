"""Text recipes side by side: held-out bits per character after equal wall time, under every seed.

``python -m bench text_train [--data PATH] [--variants gru,gru_cosine] [--minutes 12] [--seeds 0,1]
[--parallel 2] [--out table.md]``

Each variant is the char-rnn defaults with the changes `VARIANTS` gives, trained on Debian's fortunes (or
``--data``) with a time budget of ``--minutes``, published to a scratch store and scored on the held-out
fortunes as `python -m training evaluate` does. The first variant named is the baseline. With ``--parallel
2`` two runs go at once, each held to one core (``taskset``, one TensorFlow thread), which halves the wall
time of a comparison and keeps the runs alike; the table says which way it ran. A variant "wins" only when
its bits per character are lower than the baseline's under every seed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.train_bench import parse_seeds
from training.text.config import TextTrainConfig

HAS_GOALS = False


@dataclass(frozen=True)
class TextVariant:
    name: str
    description: str
    changes: Mapping[str, Any] = field(default_factory=dict)


VARIANTS: dict[str, TextVariant] = {
    variant.name: variant
    for variant in (
        TextVariant("gru", "GRU 2x256, constant learning rate (the defaults)"),
        TextVariant(
            "gru_cosine", "GRU 2x256, cosine learning rate over the budget", {"lr_schedule": "cosine"}
        ),
        TextVariant(
            "gru_cosine_b128",
            "GRU 2x256, cosine, batch 128 at learning rate 3e-3",
            {"lr_schedule": "cosine", "batch_size": 128, "lr": 3e-3},
        ),
        TextVariant("gru_lr5e3", "GRU 2x256, constant learning rate 5e-3", {"lr": 5e-3}),
        TextVariant(
            "gru_cosine_lr1e2",
            "GRU 2x256, cosine learning rate from 1e-2",
            {"lr_schedule": "cosine", "lr": 1e-2},
        ),
        TextVariant(
            "lstm_cosine", "LSTM 2x256, cosine learning rate", {"cell": "lstm", "lr_schedule": "cosine"}
        ),
        TextVariant(
            "mingru_cosine",
            "minimal GRU 3x256 with feed-forward blocks, windows of 256, cosine learning rate",
            {"cell": "mingru", "layers": 3, "sequence_length": 256, "lr_schedule": "cosine"},
        ),
        TextVariant(
            "mingru_cosine_lr5e3",
            "minimal GRU 3x256 with feed-forward blocks, windows of 256, cosine learning rate from 5e-3",
            {"cell": "mingru", "layers": 3, "sequence_length": 256, "lr_schedule": "cosine", "lr": 5e-3},
        ),
    )
}


@dataclass(frozen=True)
class Result:
    variant: str
    seed: int
    bits_per_char: float
    epochs: int
    wall_s: float


def _config(variant: TextVariant, seed: int, minutes: float, data: str | None, root: Path) -> dict[str, Any]:
    values: dict[str, Any] = {
        "dataset": "fortunes",
        "name": f"bench-{variant.name.replace('_', '-')}",
        "store": str(root / "store" / f"seed{seed}"),
        "run_dir": str(root / "runs" / f"{variant.name}-{seed}"),
        "data_path": data,
        "seed": seed,
        "time_budget": minutes,
        "epochs": 1000,
        **variant.changes,
    }
    checked: dict[str, Any] = {
        key: Path(v) if key in ("store", "run_dir") else v for key, v in values.items()
    }
    TextTrainConfig(**checked)  # a bad variant fails here, before any run starts
    return values


def _command(values: dict[str, Any]) -> list[str]:
    command = [sys.executable, "-m", "training", "train", "--model", "char-rnn"]
    for key, value in values.items():
        if value is not None:
            command += [f"--{key.replace('_', '-')}", str(value)]
    return command


def _start(values: dict[str, Any], core: int | None, log: Path) -> subprocess.Popen[bytes]:
    command, env = _command(values), dict(os.environ)
    if core is not None:
        command = ["taskset", "--cpu-list", str(core), *command]
        env |= {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def _result(variant: str, values: dict[str, Any]) -> Result:
    [version] = sorted(Path(values["store"], values["name"]).iterdir(), key=lambda path: int(path.name))
    record = json.loads((version / "evaluation.json").read_text())
    metadata = json.loads((version / "genserve.json").read_text())
    summary = metadata.get("training_summary", {})
    return Result(
        variant, values["seed"], record["bits_per_char"], metadata["epochs"], summary.get("wall_s", 0.0)
    )


def run(
    jobs: Sequence[tuple[TextVariant, int]], minutes: float, data: str | None, parallel: int, root: Path
) -> list[Result]:
    """Train and score every (variant, seed), `parallel` at a time, in the order given."""
    results: list[Result] = []
    for start in range(0, len(jobs), parallel):
        group = jobs[start : start + parallel]
        running = []
        for core, (variant, seed) in enumerate(group):
            values = _config(variant, seed, minutes, data, root)
            log = root / f"{variant.name}-{seed}.log"
            print(f"training {variant.name} seed {seed} ({minutes:g} min): {log}", flush=True)
            running.append((variant, values, _start(values, core if parallel > 1 else None, log)))
        for variant, values, process in running:
            if process.wait() != 0:
                raise SystemExit(
                    f"{variant.name} failed: see {root / (variant.name + '-' + str(values['seed']) + '.log')}"
                )
            results.append(_result(variant.name, values))
    return results


def report(results: Sequence[Result], variants: Sequence[TextVariant], seeds: Sequence[int], how: str) -> str:
    by = {(r.variant, r.seed): r for r in results}
    baseline = variants[0].name
    seed_columns = " | ".join(f"seed {seed}" for seed in seeds)
    lines = [
        f"Held-out bits per character (lower is better), {how}.",
        "",
        f"| variant | {seed_columns} | mean | spread | epochs | beats {baseline} under every seed |",
        "|---|" + "---:|" * (len(seeds) + 3) + "---|",
    ]
    for variant in variants:
        bits = [by[variant.name, seed].bits_per_char for seed in seeds]
        epochs = "/".join(str(by[variant.name, seed].epochs) for seed in seeds)
        wins = all(by[variant.name, s].bits_per_char < by[baseline, s].bits_per_char for s in seeds)
        verdict = "—" if variant.name == baseline else ("yes" if wins else "no")
        cells = " | ".join(f"{value:.3f}" for value in bits)
        lines.append(
            f"| {variant.name} | {cells} | {statistics.mean(bits):.3f} | {max(bits) - min(bits):.3f} "
            f"| {epochs} | {verdict} |"
        )
    lines += ["", *(f"- {v.name}: {v.description}" for v in variants)]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench text_train", description=__doc__)
    parser.add_argument("--data", help="the fortunes folder or file (default: Debian's)")
    parser.add_argument(
        "--variants", default="gru,gru_cosine", help=f"comma-separated, of: {', '.join(VARIANTS)}"
    )
    parser.add_argument("--minutes", type=float, default=12.0, help="time budget of every run (default: 12)")
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1])
    parser.add_argument(
        "--parallel", type=int, choices=(1, 2), default=1, help="runs at once (2: one core each)"
    )
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--keep", type=Path, help="a folder to keep the runs and stores in")
    args = parser.parse_args(list(argv))
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        parser.error(
            f"unknown variant {unknown[0] if unknown else args.variants!r}: choose from {', '.join(VARIANTS)}"
        )
    variants = [VARIANTS[name] for name in names]
    with tempfile.TemporaryDirectory(prefix="genserve-text-train-") as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        jobs = [(variant, seed) for seed in args.seeds for variant in variants]
        results = run(jobs, args.minutes, args.data, args.parallel, root)
    how = f"{args.minutes:g} minutes each" + (
        ", two at a time on one core each" if args.parallel == 2 else ", alone on every core"
    )
    table = report(results, variants, args.seeds, how)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0
