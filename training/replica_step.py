"""What the models' training steps call so that they train alike on one replica or many: losses scaled to the
global batch, per-image draws sliced from the global batch's, a gradient clip measured on the global gradient,
and variables kept equal on every copy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf


def replicas_in_sync() -> int:
    """Replicas of the strategy in scope (1 outside any)."""
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def scale_to_global_batch(loss: tf.Tensor) -> tf.Tensor:
    """A replica's mean loss scaled so that the gradients summed over replicas are the global batch mean's."""
    replicas = replicas_in_sync()
    return loss if replicas == 1 else loss * (1.0 / replicas)


def clip_by_global_batch_norm(gradients: Sequence[Any], clip_norm: float) -> list[Any]:
    """This replica's gradients, clipped as one process clips the global batch's (call from replica context).

    A Keras optimizer clips by ``global_clipnorm`` before it sums the replicas' gradients, so each replica's
    share would be clipped by its own norm. Here the shares are summed first, the sum (the global batch's
    gradient) is clipped by its norm, and each replica keeps 1/R of it: the optimizer's sum gives back the
    clipped gradient, and its own ``global_clipnorm``, if it has one, no longer clips (each share's norm is
    at most ``clip_norm / R``). With one replica it is `tf.clip_by_global_norm`, as the optimizer would do.
    An embedding's gradient stays `tf.IndexedSlices`, whose norm (of its rows, as Keras measures it) the
    sum over replicas keeps.
    """
    replicas = replicas_in_sync()
    if replicas == 1:
        return list(tf.clip_by_global_norm(list(gradients), clip_norm)[0])
    total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, list(gradients))
    clipped, _ = tf.clip_by_global_norm(total, clip_norm)
    return [_scaled(gradient, 1.0 / replicas) for gradient in clipped]


def _scaled(gradient: Any, factor: float) -> Any:
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * factor, gradient.indices, gradient.dense_shape)
    return gradient * factor


def replica_rows(draw: Callable[[Any], tf.Tensor], rows: Any) -> tf.Tensor:
    """`draw(rows)` with one replica; with several, this replica's rows of `draw(rows * replicas)`.

    Every replica draws the same global batch from the same seed state, so replicas never repeat each
    other's rows, and the draws are the ones a single process would make for the global batch.
    """
    replicas = replicas_in_sync()
    if replicas == 1:
        return draw(rows)
    start = tf.distribute.get_replica_context().replica_id_in_sync_group * rows
    return draw(rows * replicas)[start : start + rows]


def assign_in_sync(pairs: Sequence[tuple[Any, Any]], update: Callable[[Any, Any], Any]) -> None:
    """``update(target, source)`` for every pair of variables, on every device copy alike.

    Without a strategy it is a plain loop. Under one it runs in cross-replica context (a merge call from a
    replica), once per device copy of `target` with that device's copy of `source`, so a value derived
    from synchronised weights (an average of them) stays identical across replicas.
    """
    if not tf.distribute.has_strategy():
        for target, source in pairs:
            update(target, source)
        return

    def update_copies(strategy: tf.distribute.Strategy) -> None:
        for target, source in pairs:
            strategy.extended.update(_tf_variable(target), update, args=(_tf_variable(source),), group=False)

    context = tf.distribute.get_replica_context()
    if context is None:
        update_copies(tf.distribute.get_strategy())
    else:
        context.merge_call(update_copies)


def average_across_replicas(variables: Sequence[Any]) -> None:
    """Give every device copy of each variable the mean of all copies' values (from replica context).

    For state each replica updates on its own (batch-norm moving statistics); nothing without a strategy.
    """
    context = tf.distribute.get_replica_context()
    if not variables or replicas_in_sync() == 1 or context is None:
        return
    own = [tf.identity(_tf_variable(variable)) for variable in variables]

    def average(strategy: tf.distribute.Strategy, *values: Any) -> None:
        targets = [_tf_variable(variable) for variable in variables]
        means = strategy.extended.batch_reduce_to(
            tf.distribute.ReduceOp.MEAN, list(zip(values, targets, strict=True))
        )
        for target, mean in zip(targets, means, strict=True):
            strategy.extended.update(target, _assign, args=(mean,), group=False)

    context.merge_call(average, args=tuple(own))


def _assign(target: Any, value: Any) -> Any:
    return target.assign(value)


def _tf_variable(variable: Any) -> Any:
    return variable.value if isinstance(variable, keras.Variable) else variable
