"""The compiled model a `TrainConfig` asks for: a DCGAN, a conditional DCGAN or a VAE, with its optimizers."""

from __future__ import annotations

from typing import Any

import keras

from training.cdcgan import ConditionalDCGAN, build_conditional_discriminator, build_conditional_generator
from training.config import TrainConfig
from training.dcgan import DCGAN
from training.models import GenerativeModel
from training.networks import build_discriminator, build_generator
from training.vae import VAE, build_decoder, build_encoder


def build_model(
    config: TrainConfig, image_shape: tuple[int, int, int], num_classes: int | None = None
) -> GenerativeModel:
    """The compiled model `config` asks for, with its optimizers.

    A DCGAN or conditional DCGAN (which needs `num_classes`) gets one Adam per network; a VAE gets one.
    """
    if config.model == "vae":
        return build_vae(config, image_shape)
    gan = build_networks(config, image_shape, num_classes)
    gan.compile(
        g_optimizer=keras.optimizers.Adam(config.lr_g, beta_1=config.beta_1),
        d_optimizer=keras.optimizers.Adam(config.lr_d, beta_1=config.beta_1),
        jit_compile=config.jit_compile,
    )
    return gan


def build_vae(config: TrainConfig, image_shape: tuple[int, int, int]) -> VAE:
    """The compiled VAE; `lr_g` and `beta_1` configure its optimizer."""
    policy = config.dtype_policy
    vae = VAE(
        build_encoder(image_shape, config.latent_dim, dtype_policy=policy),
        build_decoder(config.latent_dim, image_shape, dtype_policy=policy),
        latent_dim=config.latent_dim,
        kl_weight=config.kl_weight,
        seed=config.seed,
    )
    vae.compile(
        optimizer=keras.optimizers.Adam(config.lr_g, beta_1=config.beta_1), jit_compile=config.jit_compile
    )
    return vae


def build_networks(config: TrainConfig, image_shape: tuple[int, int, int], num_classes: int | None) -> DCGAN:
    options: dict[str, Any] = {
        "latent_dim": config.latent_dim,
        "ema_decay": config.ema_decay,
        "seed": config.seed,
    }
    options.update(
        loss=config.loss,
        label_smoothing=config.label_smoothing,
        diffaugment=config.diffaugment_policies,
        r1_gamma=config.r1_gamma,
        r1_interval=config.r1_interval,
        mode_seeking=config.mode_seeking,
    )
    policy = config.dtype_policy
    critic: dict[str, Any] = {
        "dtype_policy": policy,
        "spectral_norm": config.spectral_norm,
        "width": config.d_width,
    }
    if not config.conditional:
        return DCGAN(
            build_generator(config.latent_dim, image_shape, dtype_policy=policy),
            build_discriminator(image_shape, **critic),
            **options,
        )
    if num_classes is None:
        raise ValueError(f"model {config.model!r} needs num_classes: the number of classes in the dataset")
    if config.conditioning is None:  # TrainConfig gives every conditional model one
        raise ValueError(f"model {config.model!r} has no discriminator conditioning")
    return ConditionalDCGAN(
        build_conditional_generator(config.latent_dim, image_shape, num_classes, dtype_policy=policy),
        build_conditional_discriminator(image_shape, num_classes, conditioning=config.conditioning, **critic),
        num_classes=num_classes,
        **options,
    )
