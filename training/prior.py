"""A learned prior for a VAE's latent space: a small RealNVP normalizing flow (Dinh et al. 2017).

A VAE trained against N(0, I) leaves holes in it: the encoder's posteriors (the aggregate posterior) do not fill
the prior, and latents drawn from the holes decode to images no real digit encodes to. The flow ``f: u -> z``
maps N(0, I) onto where the encoder actually puts the training images; it is fit by maximum likelihood on their
posterior means after the VAE is trained, and serving decodes ``f(u)`` for ``u ~ N(0, I)``.

``f`` is a stack of affine couplings followed by a fixed elementwise affine (set from the data before fitting,
so the couplings start at a standardised target). Each coupling keeps half the dimensions (a seeded split; the
next coupling transforms the other half) and scales and shifts the rest by amounts a small MLP reads from the
kept half, so the inverse and the log-determinant are exact and cheap. The MLPs' last layers start at zero:
an unfitted flow is the elementwise affine alone.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from genserve.store import write_json_atomic
from training.config import TrainConfig
from training.datasets import ImageDataset
from training.distribute import Placement, detached_copy
from training.run import TimeBudget, seed_everything
from training.run_folder import PRIOR_DIR
from training.vae import VAE, encode_means

logger = logging.getLogger(__name__)

# Ten couplings of 256 units beat six of 128 under both fit seeds on the bundled VAE (prior FID 7.1 and 6.9
# against 12.0 and 10.9, at N = 10,000), for about twice the fitting time.
COUPLINGS = 10
HIDDEN_UNITS = 256
# What a fit record without sizes (saved before the sizes were recorded) was fit with.
_RECORDLESS_SIZES = {"couplings": 6, "hidden_units": 128}
LEARNING_RATE = 1e-3
# Each coupling's log-scale is squashed into (-2, 2): one coupling stretches a dimension at most e^2 times,
# so an early step cannot blow the likelihood up.
_MAX_LOG_SCALE = 2.0
_CHECKPOINT_PREFIX = "prior"
_FIT_FILE = "fit.json"
_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def coupling_masks(latent_dim: int, couplings: int = COUPLINGS, seed: int = 0) -> np.ndarray:
    """float32 ``[couplings, latent_dim]``: 1 where a coupling keeps a dimension, 0 where it transforms it.

    Couplings come in pairs: a seeded random half of the dimensions, then the other half, so every dimension is
    transformed once per pair and conditioned on a different half in each pair.
    """
    if latent_dim < 1 or couplings < 1:
        raise ValueError(f"need latent_dim >= 1 and couplings >= 1, got {latent_dim} and {couplings}")
    rng = np.random.RandomState(seed)
    masks = []
    for index in range(couplings):
        if index % 2 == 0:
            kept = np.zeros(latent_dim, dtype=np.float32)
            kept[rng.permutation(latent_dim)[: latent_dim // 2]] = 1.0
            masks.append(kept)
        else:
            masks.append(1.0 - masks[-1])
    return np.stack(masks)


def build_coupling_network(latent_dim: int, name: str, hidden_units: int = HIDDEN_UNITS) -> keras.Model:
    """The kept half of a latent (the rest zeroed) to the raw log-scale and shift of every dimension."""
    kept = keras.Input(shape=(latent_dim,), name="kept")
    x = keras.layers.Dense(hidden_units, activation="relu", name="hidden1")(kept)
    x = keras.layers.Dense(hidden_units, activation="relu", name="hidden2")(x)
    log_scale = keras.layers.Dense(latent_dim, kernel_initializer="zeros", name="log_scale")(x)
    shift = keras.layers.Dense(latent_dim, kernel_initializer="zeros", name="shift")(x)
    return keras.Model(kept, [log_scale, shift], name=name)


class LatentFlow(keras.Model):
    """An invertible ``f: u -> z`` with ``u ~ N(0, I)``; ``call`` is `forward`, ``fit`` maximises log p(z).

    Fit on latents ``z`` (float32 ``[N, latent_dim]``), or on posteriors ``(z_mean, z_log_var)``: then every
    step draws its own sample of each posterior.
    """

    def __init__(
        self,
        latent_dim: int,
        couplings: int = COUPLINGS,
        hidden_units: int = HIDDEN_UNITS,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.sizes = {"couplings": couplings, "hidden_units": hidden_units}
        self.masks = tf.constant(coupling_masks(latent_dim, couplings))
        self.networks = [
            build_coupling_network(latent_dim, f"coupling{i}", hidden_units) for i in range(couplings)
        ]
        self.loc = self.add_weight(shape=(latent_dim,), initializer="zeros", trainable=False, name="loc")
        self.log_spread = self.add_weight(
            shape=(latent_dim,), initializer="zeros", trainable=False, name="log_spread"
        )
        self.noise_seed = keras.random.SeedGenerator(seed, name="noise_seed")
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker]

    def adapt(self, latents: np.ndarray) -> None:
        """Set the final elementwise affine to the latents' mean and standard deviation, per dimension."""
        spread = np.maximum(latents.std(axis=0), 1e-3)
        self.loc.assign(latents.mean(axis=0).astype(np.float32))
        self.log_spread.assign(np.log(spread).astype(np.float32))

    def call(self, u: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.forward(u)

    def forward(self, u: tf.Tensor) -> tf.Tensor:
        """``z = f(u)``."""
        x = tf.convert_to_tensor(u, tf.float32)
        for index, network in enumerate(self.networks):
            log_scale, shift = self._coupling(network, self.masks[index], x)
            x = x * tf.exp(log_scale) + shift
        return self.loc + tf.exp(self.log_spread) * x

    def inverse(self, z: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(u, log|det d f^{-1}/dz|)``: the base point of each latent and the log-density correction."""
        x = (tf.convert_to_tensor(z, tf.float32) - self.loc) * tf.exp(-self.log_spread)
        log_det = -tf.reduce_sum(self.log_spread) * tf.ones_like(x[:, 0])
        for index in reversed(range(len(self.networks))):
            log_scale, shift = self._coupling(self.networks[index], self.masks[index], x)
            x = (x - shift) * tf.exp(-log_scale)
            log_det -= tf.reduce_sum(log_scale, axis=1)
        return x, log_det

    def log_prob(self, z: tf.Tensor) -> tf.Tensor:
        """log p(z) under the flow, in nats, one per row."""
        u, log_det = self.inverse(z)
        base = -0.5 * tf.reduce_sum(tf.square(u), axis=1) - self.latent_dim * _HALF_LOG_TWO_PI
        return base + log_det

    def posterior_in_base(self, z_mean: tf.Tensor, z_log_var: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """A diagonal Gaussian posterior over z carried into u-space: ``(f^{-1}(z_mean), log-variance)``.

        The mean maps exactly. The log-variance is that of the linearised map at the mean,
        ``var_u_i = sum_j J_ij^2 var_z_j`` with ``J = d f^{-1}/dz``, keeping only the diagonal of ``J S J^T``:
        exact for an elementwise flow, an approximation (correlations dropped, curvature ignored) otherwise.
        """
        z_mean = tf.convert_to_tensor(z_mean, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(z_mean)
            u_mean, _ = self.inverse(z_mean)
        jacobian = tape.batch_jacobian(u_mean, z_mean)  # [N, latent_dim (u), latent_dim (z)]
        variance = tf.einsum("nij,nj->ni", tf.square(jacobian), tf.exp(z_log_var))
        return u_mean, tf.math.log(variance)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        z = self._latents(data)
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(self.log_prob(z))
        weights = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
        self.loss_tracker.update_state(loss)
        return {metric.name: metric.result() for metric in self.metrics}

    def _latents(self, data: Any) -> tf.Tensor:
        """The batch's latents: the rows themselves, or one draw from each ``(z_mean, z_log_var)`` row."""
        if not isinstance(data, tuple):
            return tf.convert_to_tensor(data, tf.float32)
        z_mean, z_log_var = data
        noise = keras.random.normal(tf.shape(z_mean), seed=self.noise_seed)
        return z_mean + tf.exp(0.5 * z_log_var) * noise

    def _coupling(self, network: keras.Model, kept: tf.Tensor, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The log-scale and shift a coupling applies: zero on the kept dimensions, read from them elsewhere."""
        raw_log_scale, shift = network(x * kept)
        log_scale = _MAX_LOG_SCALE * tf.tanh(raw_log_scale / _MAX_LOG_SCALE)
        return log_scale * (1.0 - kept), shift * (1.0 - kept)


def fit_prior(
    flow: LatentFlow,
    z_mean: np.ndarray,
    z_log_var: np.ndarray | None = None,
    *,
    epochs: int,
    batch_size: int = 256,
    seed: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
) -> list[float]:
    """Fit `flow` by maximum likelihood on posterior means, or samples when `z_log_var` is given.

    Returns the mean negative log-likelihood (nats per latent) of each epoch; Keras prints the progress.
    """
    if epochs < 1:
        raise ValueError(f"fitting a prior takes at least one epoch, got {epochs}")
    flow.adapt(z_mean)
    flow.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    rows: Any = z_mean if z_log_var is None else (z_mean, z_log_var)
    data = (
        tf.data.Dataset.from_tensor_slices(rows)
        .shuffle(len(z_mean), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    history = flow.fit(data, epochs=epochs, callbacks=list(callbacks), verbose=verbose, shuffle=False)
    losses: list[float] = history.history.get("loss", [])
    return losses


def save_prior(flow: LatentFlow, folder: Path, fit: dict[str, Any]) -> dict[str, Any]:
    """Save the flow's weights in `folder` (a run's prior folder) with `fit`, what its fitting recorded.

    `fit` holds at least ``vae_epoch``, the VAE epoch whose encoder the flow was fit to; the flow's sizes are
    recorded beside it, so `restore_prior` rebuilds the same networks. Returns the record as written.
    """
    folder = Path(folder)
    tf.train.Checkpoint(**_weights_of(flow)).write(str(folder / _CHECKPOINT_PREFIX))
    record = {**fit, **flow.sizes}
    write_json_atomic(folder / _FIT_FILE, record)
    logger.info("saved the latent prior fit to epoch %d in %s", fit["vae_epoch"], folder)
    return record


def restore_prior(folder: Path, latent_dim: int) -> tuple[LatentFlow, dict[str, Any]]:
    """The flow `save_prior` saved in `folder`, and what its fitting recorded."""
    prefix = Path(folder) / _CHECKPOINT_PREFIX
    fit_file = Path(folder) / _FIT_FILE
    if not Path(f"{prefix}.index").is_file() or not fit_file.is_file():
        raise FileNotFoundError(
            f"no latent prior in {str(folder)!r}: finish the run's training (--resume fits it) first"
        )
    fit: dict[str, Any] = json.loads(fit_file.read_text())
    sizes = {key: int(fit.get(key, default)) for key, default in _RECORDLESS_SIZES.items()}
    flow = LatentFlow(latent_dim, **sizes)
    tf.train.Checkpoint(**_weights_of(flow)).read(str(prefix)).assert_consumed()
    return flow, fit


def weights_only_copy(flow: LatentFlow) -> LatentFlow:
    """A flow with `flow`'s weights and nothing else: an export saves no optimizer state or metrics with it."""
    copy = LatentFlow(flow.latent_dim, **flow.sizes)
    for target, source in zip(_weights_of(copy).values(), _weights_of(flow).values(), strict=True):
        for target_weight, source_weight in zip(_variables(target), _variables(source), strict=True):
            target_weight.assign(source_weight)
    return copy


def _variables(item: Any) -> list[Any]:
    return list(item.weights) if isinstance(item, keras.Model) else [item]


def _weights_of(flow: LatentFlow) -> dict[str, Any]:
    """What a saved flow holds, by name: each coupling's network and the final affine (not the optimizer)."""
    networks = {f"coupling{index}": network for index, network in enumerate(flow.networks)}
    return {**networks, "loc": flow.loc, "log_spread": flow.log_spread}


# The flow prior's budget when the VAE used up all of it: enough for its first epoch to end the fit.
_LEAST_PRIOR_MINUTES = 1e-3


def fit_latent_prior(
    vae: VAE,
    dataset: ImageDataset,
    config: TrainConfig,
    placement: Placement,
    vae_epoch: int,
    minutes: float | None = None,
    *,
    verbose: int = 2,
) -> tuple[LatentFlow, dict[str, Any]]:
    """Fit a flow prior to the VAE's posterior means of `dataset`, save it in the run folder, return it.

    `minutes` bounds the fit (after its first epoch); the record says what was fit to what, and at what cost.
    """
    started = time.monotonic()
    encoder = detached_copy(vae.encoder) if placement.distributed else vae.encoder
    z_mean = encode_means(encoder, dataset.images)
    # The flow starts alike whether the VAE trained in this process or in an earlier one.
    seed_everything(config.seed)
    flow = LatentFlow(config.latent_dim, seed=config.seed)
    budget = [TimeBudget(max(minutes, _LEAST_PRIOR_MINUTES))] if minutes is not None else []
    logger.info(
        "fitting the latent prior to %d posterior means for up to %d epochs%s",
        len(z_mean),
        config.prior_epochs,
        f" or {minutes:.1f} min" if minutes is not None else "",
    )
    losses = fit_prior(
        flow,
        z_mean,
        epochs=config.prior_epochs,
        seed=config.seed or 0,
        callbacks=budget,
        verbose=verbose,
    )
    fit = {
        "vae_epoch": vae_epoch,
        "epochs": len(losses),
        "seconds": round(time.monotonic() - started, 1),
        "negative_log_likelihood": round(losses[-1], 4),
    }
    record = save_prior(flow, config.run_path / PRIOR_DIR, fit)
    logger.info("latent prior: %s", record)
    return flow, record
