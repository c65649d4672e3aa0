"""The network: embedding -> stacked GRU, LSTM or minimal GRU -> logits over the vocabulary, and its serving
module.

Training sees fixed windows from a zero state (see `training.text.train`); serving drives the same weights
one token at a time through `step`, whose recurrent state is one flat float32 row per sequence: every
layer's ``h`` (and an LSTM's ``c``) side by side, so the service can batch sequences without knowing the
cell. `prefill` reads whole prompts in one call: a parallel scan for the minimal GRU (`training.text.mingru`),
a loop inside the graph for the others.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from genserve import store
from genserve.signatures import TEXT_SIGNATURE
from training.signatures import tf_spec
from training.text.mingru import StackedMinGru


def build_char_rnn(
    vocabulary_size: int,
    *,
    cell: str = "gru",
    layers: int = 2,
    units: int = 256,
    embedding_dim: int = 64,
    dropout: float = 0.0,
) -> keras.Model:
    """ids int32 ``[B, T]`` -> next-token logits ``[B, T, vocabulary_size]``.

    A ``mingru`` network is `units` wide throughout (its embedding too: `embedding_dim` is not used).
    """
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    if cell == "mingru":
        x = keras.layers.Embedding(vocabulary_size, units, name="embedding")(ids)
        x, _ = StackedMinGru(layers, units, units, dropout=dropout, name="rnn")(x)
        logits = keras.layers.Dense(vocabulary_size, name="logits")(x)
        return keras.Model(ids, logits, name="char_mingru")
    x = keras.layers.Embedding(vocabulary_size, embedding_dim, name="embedding")(ids)
    recurrent = keras.layers.GRU if cell == "gru" else keras.layers.LSTM
    for layer in range(layers):
        x = recurrent(units, return_sequences=True, name=f"rnn_{layer}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{layer}")(x)
    logits = keras.layers.Dense(vocabulary_size, name="logits")(x)
    return keras.Model(ids, logits, name=f"char_{cell}")


class CharRnnServer(tf.Module):
    """The exported signatures: `step`, `initial_state` and the in-graph sampler `serving_default`."""

    def __init__(
        self, model: keras.Model, vocabulary: list[str], *, cell: str, layers: int, units: int
    ) -> None:
        super().__init__(name="char_rnn_server")
        self.model = model
        self._cell_kind, self._units = cell, units
        self._embedding = model.get_layer("embedding")
        self._stack: StackedMinGru | None = model.get_layer("rnn") if cell == "mingru" else None
        self._rnn_layers = [] if cell == "mingru" else [model.get_layer(f"rnn_{i}") for i in range(layers)]
        self._logits = model.get_layer("logits")
        self.state_size = layers * units * (2 if cell == "lstm" else 1)
        self.vocabulary = tf.constant(vocabulary)
        self._vocabulary_size = len(vocabulary)
        keys = tf.constant(vocabulary[1:])
        values = tf.range(1, len(vocabulary), dtype=tf.int32)
        self._table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), -1)
        state_spec = tf.TensorSpec([None, self.state_size], tf.float32, name=store.STATE_INPUT)
        self.step = tf.function(
            self._step,
            input_signature=[tf.TensorSpec([None], tf.int32, name=store.TOKEN_IDS_INPUT), state_spec],
        )
        self.prefill = tf.function(
            self._prefill,
            input_signature=[
                tf.TensorSpec([None, None], tf.int32, name=store.TOKEN_IDS_INPUT),
                tf.TensorSpec([None], tf.int32, name=store.LENGTHS_INPUT),
                state_spec,
            ],
        )
        self.initial_state = tf.function(
            self._initial_state, input_signature=[tf.TensorSpec([], tf.int32, name=store.BATCH_SIZE_INPUT)]
        )
        self.sample = tf.function(
            self._sample,
            # The store's text signature, one value each: TensorFlow's own sampler writes one sequence a call.
            input_signature=[tf_spec(spec, scalar=True) for spec in TEXT_SIGNATURE.inputs],
        )

    def signatures(self) -> dict[str, Any]:
        return {
            store.SIGNATURE_NAME: self.sample.get_concrete_function(),
            store.STEP_SIGNATURE: self.step.get_concrete_function(),
            store.PREFILL_SIGNATURE: self.prefill.get_concrete_function(),
            store.INITIAL_STATE_SIGNATURE: self.initial_state.get_concrete_function(),
        }

    def _initial_state(self, batch_size: tf.Tensor) -> dict[str, tf.Tensor]:
        return {store.STATE_OUTPUT: tf.zeros([batch_size, self.state_size], tf.float32)}

    def _step(self, token_ids: tf.Tensor, state: tf.Tensor) -> dict[str, tf.Tensor]:
        logits, new_state = self._advance(token_ids, state)
        return {store.LOGITS_OUTPUT: logits, store.STATE_OUTPUT: new_state}

    def _prefill(self, token_ids: tf.Tensor, lengths: tf.Tensor, state: tf.Tensor) -> dict[str, tf.Tensor]:
        """Every row's tokens up to its length, from its state: the logits after its last token and the state
        there (a row of length 0 keeps its state and gets zero logits)."""
        if self._stack is not None:
            logits, new_state = self._scan(token_ids, lengths, state)
        else:
            logits, new_state = self._loop(token_ids, lengths, state)
        return {store.LOGITS_OUTPUT: logits, store.STATE_OUTPUT: new_state}

    def _scan(
        self, token_ids: tf.Tensor, lengths: tf.Tensor, state: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The minimal GRU's prefill: one parallel pass, then each row's last real position picked out."""
        assert self._stack is not None
        features, states = self._stack(self._embedding(token_ids), state, all_states=True, training=False)
        last = tf.maximum(lengths - 1, 0)
        empty = (lengths <= 0)[:, None]
        picked = tf.gather(features, last, batch_dims=1)
        new_state = tf.where(empty, state, tf.gather(states, last, batch_dims=1))
        logits = tf.where(empty, 0.0, tf.cast(self._logits(picked), tf.float32))
        return logits, new_state

    def _loop(
        self, token_ids: tf.Tensor, lengths: tf.Tensor, state: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """A gated cell's prefill: the cells inside one graph loop over the embedded prompt, each row frozen
        after its last token; the logits once, from the last top-layer output."""
        steps = tf.shape(token_ids)[1]
        embedded = self._embedding(token_ids)
        top = tf.zeros([tf.shape(token_ids)[0], self._units], tf.float32)

        def feed(t: tf.Tensor, top: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            new_top, new_state = self._cells(embedded[:, t], state)
            reading = (t < lengths)[:, None]
            return (
                t + 1,
                tf.where(reading, tf.cast(new_top, tf.float32), top),
                tf.where(reading, new_state, state),
            )

        _, top, state = tf.while_loop(
            lambda t, *_: t < steps,
            feed,
            [tf.constant(0), top, state],
            shape_invariants=[
                tf.TensorShape([]),
                tf.TensorShape([None, self._units]),
                tf.TensorShape([None, self.state_size]),
            ],
        )
        logits = tf.cast(self._logits(top), tf.float32)
        return tf.where((lengths <= 0)[:, None], 0.0, logits), state

    def _advance(self, token_ids: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = self._embedding(token_ids)
        if self._stack is not None:
            features, new_state = self._stack.step(x, state)
            return tf.cast(self._logits(features), tf.float32), new_state
        top, new_state = self._cells(x, state)
        return tf.cast(self._logits(top), tf.float32), new_state

    def _cells(self, x: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """A gated network's layers over one embedded character: the top layer's output and the next state."""
        pieces, offset, units = [], 0, self._units
        for layer in self._rnn_layers:
            if self._cell_kind == "lstm":
                h, c = state[:, offset : offset + units], state[:, offset + units : offset + 2 * units]
                x, (h, c) = layer.cell(x, [h, c], training=False)
                pieces += [h, c]
                offset += 2 * units
            else:
                x, (h,) = layer.cell(x, [state[:, offset : offset + units]], training=False)
                pieces.append(h)
                offset += units
        return x, tf.concat(pieces, axis=1)

    def _advance_one(self, token: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One sequence, one token: shapes fixed at [1, ...] so loops keep them."""
        logits, state = self._advance(tf.reshape(token, [1]), state)
        return tf.reshape(logits, [1, self._vocabulary_size]), tf.reshape(state, [1, self.state_size])

    def _sample(
        self, prompt: tf.Tensor, max_new_tokens: tf.Tensor, temperature: tf.Tensor, seed: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """End-of-text and the prompt fed token by token, then up to `max_new_tokens` sampled ones."""
        ids = self._table.lookup(tf.strings.unicode_split(prompt, "UTF-8"))
        context = tf.concat([[store.END_OF_TEXT_ID], tf.boolean_mask(ids, ids >= 0)], axis=0)
        state = tf.zeros([1, self.state_size], tf.float32)
        logits = tf.zeros([1, self._vocabulary_size], tf.float32)

        def feed(i: tf.Tensor, logits: tf.Tensor, state: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            logits, state = self._advance_one(context[i], state)
            return i + 1, logits, state

        _, logits, state = tf.while_loop(
            lambda i, *_: i < tf.size(context), feed, [tf.constant(0), logits, state]
        )
        tokens = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[])

        def generate(
            i: tf.Tensor, done: tf.Tensor, logits: tf.Tensor, state: tf.Tensor, tokens: tf.TensorArray
        ) -> tuple[Any, ...]:
            token = _pick(logits, temperature, tf.stack([seed, tf.cast(i, tf.int64)]))
            done = tf.equal(token, store.END_OF_TEXT_ID)
            tokens = tf.cond(done, lambda: tokens, lambda: tokens.write(tokens.size(), token))
            logits, state = self._advance_one(token, state)
            return i + 1, done, logits, state, tokens

        *_, tokens = tf.while_loop(
            lambda i, done, *_: tf.logical_and(i < max_new_tokens, tf.logical_not(done)),
            generate,
            [tf.constant(0), tf.constant(False), logits, state, tokens],
        )
        text = tf.strings.reduce_join(tf.gather(self.vocabulary, tokens.stack()))
        return {store.TEXT_OUTPUT: text}


def _pick(logits: tf.Tensor, temperature: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The next token of a [1, V] row: greedy at temperature 0, else a seeded draw (stateless)."""
    return tf.cond(
        temperature <= 0.0,
        lambda: tf.argmax(logits[0], output_type=tf.int32),
        lambda: tf.cast(tf.random.stateless_categorical(logits / temperature, 1, seed=seed)[0, 0], tf.int32),
    )
