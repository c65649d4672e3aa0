"""The char-rnn under a strategy (`training.distribute`): its replicated training step and held-out loss.

One process trains the compiled network with Keras ``fit``. Under ``--distribute mirrored`` or
``multi-worker`` every replica runs `CharRnnTrainer.train_step` on its rows of each global batch from
`training.distribute.fit_replicas`, as the image models do: the cross-entropy is scaled to the global batch
and the gradient clipped by the global batch's norm, so R replicas take the step one process takes. The
per-epoch ``val_loss`` comes from `HeldOutLoss`, on the chief, over every held-out window.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from training.replica_step import clip_by_global_batch_norm, scale_to_global_batch


def cross_entropy(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """The mean next-character cross-entropy over every position of every row (the compiled loss)."""
    losses = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    return tf.reduce_mean(losses)


class CharRnnTrainer(keras.Model):
    """Trains a compiled char-rnn `network` with its optimizer, one replica of many (build under the scope)."""

    def __init__(self, network: keras.Model, clip_norm: float) -> None:
        super().__init__(name="char_rnn_trainer")
        self.network = network
        self.clip_norm = clip_norm
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker]

    def call(self, ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.network(ids, training=training)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        inputs, targets = data
        with tf.GradientTape() as tape:
            loss = cross_entropy(targets, self.network(inputs, training=True))
            share = scale_to_global_batch(loss)  # this replica's share of the global batch's loss
        variables = self.network.trainable_variables
        gradients = clip_by_global_batch_norm(tape.gradient(share, variables), self.clip_norm)
        self.network.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


class HeldOutLoss(keras.callbacks.Callback):
    """After every epoch, the held-out windows' mean cross-entropy into the logs as ``val_loss``, as ``fit``
    reports it (run it before the callbacks that record the logs).

    It runs outside the replicas, on one device, over all of `batches`, so every window counts once and a
    last partial batch needs no special case; a forward pass over the held-out share is cheap beside an
    epoch of training.
    """

    def __init__(self, network: keras.Model, batches: tf.data.Dataset) -> None:
        super().__init__()
        self._network, self._batches = network, batches

        @tf.function(reduce_retracing=True)
        def summed(inputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
            logits = self._network(inputs, training=False)
            losses = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
            return tf.reduce_sum(tf.cast(losses, tf.float64))

        self._summed = summed

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        total, count = 0.0, 0
        for inputs, targets in self._batches:
            total += float(self._summed(inputs, targets))
            count += int(tf.size(targets))
        if logs is not None and count:
            logs["val_loss"] = total / count
