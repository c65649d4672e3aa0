"""Training on several devices or machines with `tf.distribute`: the strategy, and what a step needs under it.

Data parallel: every replica holds the whole model. Each step the global batch (``--batch-size``) is split
evenly, each replica computes gradients on its rows, Keras' optimizers sum the gradients across replicas, and
every copy applies the same update, so the copies stay identical.

- ``mirrored``: `tf.distribute.MirroredStrategy` over this machine's GPUs, or its (logical) CPU devices.
- ``multi-worker``: `tf.distribute.MultiWorkerMirroredStrategy` over the workers TF_CONFIG lists, each with
  its local devices. The task of type "chief", or else worker 0, is the chief: it alone keeps the run folder
  and publishes; the others write to their own folders under ``<run>/workers/``.

What a model's step does so that it trains the same as one process on the same global batch (each helper
changes nothing when there is one replica, so single-process training is untouched):

- `scale_to_global_batch`: a replica's loss is the mean over its rows; divided by the replica count, the
  summed gradients are those of the global batch's mean (`tf.nn.compute_average_loss` for equal per-replica
  batches, which `Placement.per_replica_batch_size` guarantees).
- `clip_by_global_batch_norm`: a gradient-norm clip (the char-rnn's) measured on the global batch's gradient,
  not on each replica's share of it, which is what a Keras optimizer's ``global_clipnorm`` would measure.
- `replica_rows`: a per-image random draw (latents, a VAE's noise) is made for the whole global batch on every
  replica from the shared seed generator, and each replica keeps its own rows.
- `assign_in_sync`: the generator average is updated in cross-replica context, once per device copy, from the
  synchronised weights.
- `average_across_replicas`: batch normalisation normalises each replica's rows with their own statistics
  (as data-parallel training usually does; Keras' synchronised batch norm trips over collective ordering under
  MirroredStrategy), and its moving statistics are averaged over the replicas after every step, so every copy
  holds the same.

Keras' own ``fit`` does not run under MultiWorkerMirroredStrategy (it reduces nested batches and scalar
metrics in ways that strategy refuses), so distributed runs go through `fit_replicas`, a plain epoch loop
that drives the same callbacks. After it, `remove_worker_folder` and `publish_once` finish a run: the chief
alone keeps its folder and publishes, once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from genserve.store import write_json_atomic
from training.options import check_distribute
from training.run_folder import PUBLISHED_FILE, WORKERS_DIR

logger = logging.getLogger(__name__)

TF_CONFIG_VARIABLE = "TF_CONFIG"
_CHIEF = "chief"
_WORKER = "worker"


@dataclass(frozen=True)
class Placement:
    """Where this process trains: its strategy, and which of how many workers it is (worker 0 is the chief)."""

    strategy: tf.distribute.Strategy
    mode: str
    worker_index: int = 0
    workers: int = 1

    @property
    def replicas(self) -> int:
        """Model copies that train in lock-step, over all workers."""
        return int(self.strategy.num_replicas_in_sync)

    @property
    def distributed(self) -> bool:
        return self.mode != "none"

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    def per_replica_batch_size(self, global_batch_size: int) -> int:
        """Rows each replica takes from a global batch, or ValueError when they cannot all take the same."""
        if global_batch_size % self.replicas:
            raise ValueError(
                f"batch_size {global_batch_size} does not split evenly over {self.replicas} replicas: use a "
                f"multiple of {self.replicas} (batch_size is the global batch)"
            )
        return global_batch_size // self.replicas

    def describe(self, global_batch_size: int) -> dict[str, Any]:
        """What a run records about its distribution (run config.json, version metadata)."""
        return {
            "strategy": self.mode,
            "replicas": self.replicas,
            "workers": self.workers,
            "global_batch_size": global_batch_size,
            "per_replica_batch_size": self.per_replica_batch_size(global_batch_size),
        }

    def run_dir(self, run_path: Path) -> Path:
        """Where this process writes: the run folder for the chief, its own folder under it for the others."""
        return run_path if self.is_chief else run_path / WORKERS_DIR / f"worker-{self.worker_index}"


def log_distribution(distribution: dict[str, Any]) -> None:
    """State once, at the start, how a run is spread (`Placement.describe`); nothing for one device."""
    if distribution.get("strategy", "none") == "none":
        return
    logger.info(
        "distribute %s: %d replicas on %d workers; global batch %d, %d per replica",
        distribution["strategy"],
        distribution["replicas"],
        distribution["workers"],
        distribution["global_batch_size"],
        distribution["per_replica_batch_size"],
    )


def resolve_mode(mode: str, visible_gpus: int) -> str:
    """The mode `mode` stands for: "auto" is "mirrored" when more than one GPU is visible, else "none"."""
    check_distribute(mode)
    if mode != "auto":
        return mode
    return "mirrored" if visible_gpus > 1 else "none"


def make_placement(mode: str) -> Placement:
    """The strategy for `mode`; call it before TensorFlow runs anything (multi-worker needs that)."""
    resolved = resolve_mode(mode, len(tf.config.list_physical_devices("GPU")))
    if resolved == "none":
        return Placement(tf.distribute.get_strategy(), resolved)
    if resolved == "mirrored":
        return Placement(_mirrored_strategy(), resolved)
    cluster = _read_tf_config()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    return Placement(strategy, resolved, *worker_position(cluster))


def _mirrored_strategy() -> tf.distribute.MirroredStrategy:
    """Mirrored over the GPUs (NCCL all-reduce), or without any over every logical CPU device.

    On CPUs the values are reduced on one device and copied back: MirroredStrategy's default collective
    all-reduce there can pair one replica's generator gradients with another's discriminator gradients when
    a step has two optimizers.
    """
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy(devices=[device.name for device in gpus])
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())


def _read_tf_config() -> dict[str, Any]:
    text = os.environ.get(TF_CONFIG_VARIABLE)
    if not text:
        raise ValueError(
            "multi-worker training reads its cluster from TF_CONFIG, which is unset: set it on every worker "
            '(e.g. {"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}) '
            "or use --distribute mirrored on one machine"
        )
    config: dict[str, Any] = json.loads(text)
    return config


def worker_position(tf_config: dict[str, Any]) -> tuple[int, int]:
    """(this task's worker index, number of workers) for a TF_CONFIG: the chief task first, then the workers."""
    cluster = tf_config.get("cluster", {})
    chiefs, workers = len(cluster.get(_CHIEF, [])), len(cluster.get(_WORKER, []))
    task = tf_config.get("task", {})
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind not in (_CHIEF, _WORKER) or chiefs + workers == 0:
        raise ValueError(f"TF_CONFIG must describe a chief or worker task of its cluster, got {tf_config!r}")
    return (index if kind == _CHIEF else chiefs + index), chiefs + workers


def chief_value(placement: Placement, value: int) -> int:
    """The chief's `value` on every worker, so all act on one value (the data seed of an unseeded run)."""
    return _sum_over_workers(placement, value if placement.is_chief else 0)


def any_worker(placement: Placement, flag: bool) -> bool:
    """Whether `flag` is set on any worker (a time budget used up), so all workers stop together."""
    return _sum_over_workers(placement, int(flag)) > 0


def _sum_over_workers(placement: Placement, value: int) -> int:
    if placement.workers == 1:
        return value
    strategy, replicas_here = placement.strategy, placement.replicas // placement.workers

    @tf.function
    def total() -> tf.Tensor:
        # Every replica of this worker contributes, so each worker's value counts once per its replicas.
        mine = strategy.run(lambda: tf.constant(value, tf.int64))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, mine, axis=None)

    return int(total()) // replicas_here


def distribute_batches(
    placement: Placement,
    batches_of: Callable[[int], tf.data.Dataset],
    global_batch_size: int,
    examples: int,
) -> tf.distribute.DistributedDataset:
    """Every replica's rows of each global batch, each worker reading only its own replicas' batches.

    `batches_of(rows)` is the shuffled pipeline batched at `rows`, shuffled alike on every worker; it is
    batched per replica, cut to whole global batches (as one process would drop the remainder), and worker
    `w` keeps the batches of its replicas. So replica `r` trains on rows ``[r * b, (r + 1) * b)`` of the
    global batch a single process would see, and no example is read twice in an epoch.
    """
    per_replica = placement.per_replica_batch_size(global_batch_size)
    replicas = placement.replicas
    whole_batches = examples // global_batch_size

    def worker_batches(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        worker = context.input_pipeline_id

        def is_mine(index: tf.Tensor, _: Any) -> tf.Tensor:
            return tf.equal((index % replicas) // local, worker)

        batches = batches_of(per_replica).take(whole_batches * replicas).enumerate().filter(is_mine)
        return batches.map(lambda _, batch: batch)

    return placement.strategy.distribute_datasets_from_function(worker_batches)


def fit_replicas(
    model: keras.Model,
    batches: tf.distribute.DistributedDataset,
    placement: Placement,
    *,
    epochs: int,
    initial_epoch: int,
    callbacks: Sequence[keras.callbacks.Callback],
    verbose: int,
) -> None:
    """Train `model` on every replica, epoch by epoch, on `batches` (from `distribute_batches`).

    The callbacks see what ``fit`` would show them: epoch and batch events, the logs averaged over replicas
    and ``model.stop_training``, which is agreed across workers after every epoch so all stop together.
    """
    step = _replicated_step(model, placement.strategy)
    events = keras.callbacks.CallbackList(
        list(callbacks), add_progbar=verbose != 0, model=model, verbose=verbose, epochs=epochs, steps=None
    )
    model.stop_training = False
    events.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        events.on_epoch_begin(epoch)
        for index, batch in enumerate(batches):
            events.on_train_batch_begin(index)
            logs = {name: float(value) for name, value in step(batch).items()}
            events.on_train_batch_end(index, logs)
        logs = dict(logs)
        events.on_epoch_end(epoch, logs)
        model.stop_training = any_worker(placement, bool(model.stop_training))
        if model.stop_training:
            break
    events.on_train_end(logs)


def _replicated_step(
    model: keras.Model, strategy: tf.distribute.Strategy
) -> Callable[[Any], dict[str, tf.Tensor]]:
    @tf.function
    def step(batch: Any) -> dict[str, tf.Tensor]:
        outputs = strategy.run(model.train_step, args=(batch,))
        # Metrics keep per-replica sums (synchronised on read); equal per-replica batches make the mean exact.
        return {
            name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in outputs.items()
        }

    return step


def remove_worker_folder(placement: Placement, run_path: Path) -> None:
    """A non-chief worker's own folder, removed once it is done, and the workers' folder after the last one."""
    if placement.is_chief:
        return
    folder = placement.run_dir(run_path)
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()


def publish_once(placement: Placement, run_path: Path, epochs: int, publish: Callable[[], Path]) -> Path:
    """`publish()`'s version folder; a multi-worker run publishes once for its `epochs`.

    The chief records what it published in the run folder (``published.json``), so a chief restarted after
    publishing (with ``--resume``, after every epoch was trained) returns that version instead of a second.
    """
    record = run_path / PUBLISHED_FILE
    if placement.workers > 1 and record.is_file():
        published = json.loads(record.read_text())
        if published["epochs"] == epochs:
            logger.info("run %s already published %s", run_path, published["version_dir"])
            return Path(published["version_dir"])
    version_dir = publish()
    if placement.workers > 1:
        write_json_atomic(record, {"version_dir": str(version_dir), "epochs": epochs})
    return version_dir


def detached_copy(model: keras.Model) -> keras.Model:
    """A twin of `model` with its weights, whose variables belong to no strategy (call outside any scope).

    What the chief exports, so a SavedModel never holds distributed variables, nor the optimizer's slots.
    """
    # Built from the config, not with `keras.models.clone_model`, which compiles the twin again when `model` is
    # compiled: its optimizer would go into the SavedModel too.
    twin = type(model).from_config(model.get_config())
    twin.set_weights(model.get_weights())
    return twin
