"""The store's signatures (`genserve.signatures`) as TensorFlow input specs, for the exporters."""

from __future__ import annotations

import tensorflow as tf

from genserve.signatures import STRING, TensorSpec


def tf_spec(spec: TensorSpec, *, scalar: bool = False) -> tf.TensorSpec:
    """`spec` as a `tf.TensorSpec` (any size as None); `scalar` for one value instead of a row per example."""
    shape = [] if scalar else [None if size == -1 else size for size in spec.shape]
    dtype = tf.string if spec.dtype == STRING else tf.as_dtype(spec.dtype)
    return tf.TensorSpec(shape, dtype, name=spec.name)
