"""A recurrence whose gates read only the current input, so a whole sequence runs as one parallel scan.

The cell (a minimal GRU: Feng et al., "Were RNNs All We Needed?", 2024) keeps one state vector ``h`` per layer:

    z_t = sigmoid(k_t)           k_t, p_t = split(x_t W + b)
    h_t = (1 - z_t) * h_{t-1} + z_t * g(p_t)        g(p) = p + 1/2 for p >= 0, sigmoid(p) below

Neither gate depends on ``h_{t-1}``, so ``h_t = a_t * h_{t-1} + b_t`` is a linear recurrence: over a window it
is a cumulative sum in log space (every ``h`` is positive because ``g`` is), and training and reading a prompt
cost a few large matrix products instead of one small product per character. Decoding still takes one
character at a time from the carried state, like any recurrent model.

`StackedMinGru` interleaves such layers with position-wise feed-forward layers, each behind layer normalisation
and a residual connection: the scan is linear in ``h``, so the depth and the feed-forward layers give it its
non-linearity.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

# Below this a state value counts as zero when its logarithm is taken (a fresh sequence's state is all zeros).
_SMALLEST_STATE = 1e-30


def _log_g(p: tf.Tensor) -> tf.Tensor:
    """log g(p), computed without ever taking the logarithm of a number near zero."""
    return tf.where(p >= 0, tf.math.log(tf.nn.relu(p) + 0.5), -tf.nn.softplus(-p))


def _g(p: tf.Tensor) -> tf.Tensor:
    return tf.where(p >= 0, p + 0.5, tf.sigmoid(p))


@keras.saving.register_keras_serializable(package="genserve")
class MinGru(keras.layers.Layer):
    """``[B, T, D] -> ([B, T, units], [B, units])``: every step's state and the last, from an optional start."""

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.gates = keras.layers.Dense(2 * units, name="gates")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.gates.build(input_shape)

    def call(self, x: tf.Tensor, initial_state: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        k, p = tf.split(tf.cast(self.gates(x), tf.float32), 2, axis=-1)
        log_keep = -tf.nn.softplus(k)  # log(1 - z)
        log_values = -tf.nn.softplus(-k) + _log_g(p)  # log(z * g(p))
        if initial_state is not None:
            start = tf.math.log(tf.maximum(initial_state, _SMALLEST_STATE))[:, None, :]
            log_keep = tf.concat([tf.zeros_like(start), log_keep], axis=1)
            log_values = tf.concat([start, log_values], axis=1)
        decay = tf.cumsum(log_keep, axis=1)
        states = tf.exp(decay + tf.math.cumulative_logsumexp(log_values - decay, axis=1))
        if initial_state is not None:
            states = states[:, 1:]
        return states, states[:, -1]

    def step(self, x: tf.Tensor, state: tf.Tensor) -> tf.Tensor:
        """One character: ``x [B, D]``, ``state [B, units]`` -> the next state."""
        k, p = tf.split(tf.cast(self.gates(x), tf.float32), 2, axis=-1)
        z = tf.sigmoid(k)
        return (1.0 - z) * state + z * _g(p)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="genserve")
class StackedMinGru(keras.layers.Layer):
    """Embedded characters ``[B, T, D]`` -> features ``[B, T, D]`` through `layers` residual blocks.

    Each block: ``x += W_o scan(LayerNorm(x))``, then ``x += FFN(LayerNorm(x))`` with a GELU hidden layer
    `expansion` times wider; a final layer normalisation. The state is every layer's ``h`` side by side.
    """

    def __init__(
        self, layers: int, units: int, width: int, expansion: int = 2, dropout: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.layers_count, self.units, self.width = layers, units, width
        self.expansion, self.dropout_rate = expansion, dropout
        self.scans = [MinGru(units, name=f"scan_{i}") for i in range(layers)]
        self.scan_norms = [keras.layers.LayerNormalization(name=f"scan_norm_{i}") for i in range(layers)]
        self.scan_outs = [keras.layers.Dense(width, name=f"scan_out_{i}") for i in range(layers)]
        self.ffn_norms = [keras.layers.LayerNormalization(name=f"ffn_norm_{i}") for i in range(layers)]
        self.ffn_ins = [
            keras.layers.Dense(expansion * width, activation="gelu", name=f"ffn_in_{i}")
            for i in range(layers)
        ]
        self.ffn_outs = [keras.layers.Dense(width, name=f"ffn_out_{i}") for i in range(layers)]
        self.final_norm = keras.layers.LayerNormalization(name="final_norm")
        self.drop = keras.layers.Dropout(dropout)

    @property
    def state_size(self) -> int:
        return self.layers_count * self.units

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        hidden = (*input_shape[:-1], self.units)
        wide = (*input_shape[:-1], self.expansion * self.width)
        for i in range(self.layers_count):
            self.scan_norms[i].build(input_shape)
            self.scans[i].build(input_shape)
            self.scan_outs[i].build(hidden)
            self.ffn_norms[i].build(input_shape)
            self.ffn_ins[i].build(input_shape)
            self.ffn_outs[i].build(wide)
        self.final_norm.build(input_shape)

    def call(
        self,
        x: tf.Tensor,
        state: tf.Tensor | None = None,
        all_states: bool = False,
        training: bool | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """``([B, T, D], [B, S] or None) -> ([B, T, D], [B, S])``: every position's features and the last
        state, or with `all_states` the state after every position, ``[B, T, S]``."""
        states = []
        for i in range(self.layers_count):
            start = None if state is None else state[:, i * self.units : (i + 1) * self.units]
            hidden, last = self.scans[i](self.scan_norms[i](x), initial_state=start)
            x = x + self.drop(self.scan_outs[i](hidden), training=training)
            x = x + self.drop(self.ffn_outs[i](self.ffn_ins[i](self.ffn_norms[i](x))), training=training)
            states.append(hidden if all_states else last)
        return self.final_norm(x), tf.concat(states, axis=-1)

    def step(self, x: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One character: ``x [B, D]``, ``state [B, S]`` -> (features ``[B, D]``, the next state)."""
        pieces = []
        for i in range(self.layers_count):
            h = self.scans[i].step(self.scan_norms[i](x), state[:, i * self.units : (i + 1) * self.units])
            x = x + self.scan_outs[i](h)
            x = x + self.ffn_outs[i](self.ffn_ins[i](self.ffn_norms[i](x)))
            pieces.append(h)
        return self.final_norm(x), tf.concat(pieces, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "layers": self.layers_count,
            "units": self.units,
            "width": self.width,
            "expansion": self.expansion,
            "dropout": self.dropout_rate,
        }
