"""Training throughput under tf.distribute: one device, two logical CPU devices, two local worker processes.

Every setup trains the same DCGAN on the same procedural shapes with the same global batch, in fresh
processes (logical devices and multi-worker clusters are fixed when TensorFlow starts), without publishing.
Images/s come from the run's history.json, over the epochs after the first (which traces the step). On one
machine's CPU the replicas share the same cores, so this measures what distribution costs, not a speed-up.

    python -m bench distribute [--epochs 3] [--limit 1024] [--batch-size 64] [--model dcgan]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.processes import free_ports
from training.config import TrainConfig
from training.options import MODELS
from training.run_folder import HISTORY_FILE

_ROOT = Path(__file__).resolve().parents[1]
_RUN = "--run"  # internal: train one configuration in this process


@dataclass(frozen=True)
class Setup:
    """A way to spread the same training: its strategy, logical CPU devices per process, and processes."""

    name: str
    distribute: str
    devices: int = 1
    workers: int = 1


SETUPS = (
    Setup("1 device", "none"),
    Setup("2 logical CPU devices (mirrored)", "mirrored", devices=2),
    Setup("2 local workers (multi-worker)", "multi-worker", workers=2),
)


@dataclass(frozen=True)
class Measurement:
    setup: Setup
    replicas: int
    images_per_second: float


def _config(args: argparse.Namespace, setup: Setup, folder: Path) -> TrainConfig:
    return TrainConfig(
        model=args.model,
        dataset="shapes",
        name="bench-distribute",
        limit=args.limit,
        batch_size=args.batch_size,
        epochs=args.epochs,
        distribute=setup.distribute,
        store=folder / "store",
        run_dir=folder / "run",
        export=False,
    )


def _measure(args: argparse.Namespace, setup: Setup, folder: Path) -> Measurement:
    config = _config(args, setup, folder)
    payload = json.dumps({"config": config.to_dict(), "devices": setup.devices})
    ports = free_ports(setup.workers)
    processes = []
    for index in range(setup.workers):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        if setup.workers > 1:
            workers = [f"localhost:{port}" for port in ports]
            env["TF_CONFIG"] = json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            )
        command = [sys.executable, "-m", "bench.distribute_bench", _RUN, payload]
        log = (folder / f"worker-{index}.log").open("wb")
        processes.append(subprocess.Popen(command, cwd=_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    for index, process in enumerate(processes):
        if process.wait() != 0:
            raise RuntimeError(f"{setup.name} failed: see {folder / f'worker-{index}.log'}")
    run = json.loads((config.run_path / "config.json").read_text())
    epochs = json.loads((config.run_path / HISTORY_FILE).read_text())["epochs"][1:]
    images = sum(entry["images"] for entry in epochs)
    seconds = sum(entry["wall_seconds"] for entry in epochs)
    return Measurement(setup, int(run["distribution"]["replicas"]), images / seconds)


def _table(measurements: list[Measurement], args: argparse.Namespace) -> str:
    baseline = measurements[0].images_per_second
    lines = [
        f"{args.model}, shapes ({args.limit} images), global batch {args.batch_size}, epochs 2-{args.epochs}",
        "",
        "| setup | replicas | per-replica batch | images/s | vs 1 device |",
        "|---|---:|---:|---:|---:|",
    ]
    for item in measurements:
        per_replica = args.batch_size // item.replicas
        ratio = item.images_per_second / baseline
        lines.append(
            f"| {item.setup.name} | {item.replicas} | {per_replica} | {item.images_per_second:,.0f} | {ratio:.2f}x |"
        )
    return "\n".join(lines)


def _run_one(payload: str) -> None:
    """Train one configuration here, with the CPU split into the logical devices it asks for."""
    spec: dict[str, Any] = json.loads(payload)
    import tensorflow as tf

    devices = int(spec["devices"])
    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    from training.train import train

    train(TrainConfig.from_dict(spec["config"]))


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench distribute", description=__doc__)
    parser.add_argument("--model", choices=MODELS, default="dcgan")
    parser.add_argument("--epochs", type=int, default=3, help="the first is not timed (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=1024, help="training images (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch (default: %(default)s)")
    args = parser.parse_args(list(argv))
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch traces the step and is not timed")
    measurements = []
    with tempfile.TemporaryDirectory() as scratch:
        for index, setup in enumerate(SETUPS):
            folder = Path(scratch) / str(index)
            folder.mkdir()
            measurements.append(_measure(args, setup, folder))
            print(f"{setup.name}: {measurements[-1].images_per_second:.0f} images/s", file=sys.stderr)
    print(_table(measurements, args))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == _RUN:
        _run_one(sys.argv[2])
    else:
        raise SystemExit(main(sys.argv[1:]))
