"""The model kinds the training loop, checkpoints and export handle, as one type."""

from __future__ import annotations

from typing import Any

from training.dcgan import DCGAN
from training.vae import VAE

GenerativeModel = DCGAN | VAE

# Names of the networks in a checkpoint that export code restores without building the whole model.
GENERATOR_SLOT = "generator"
EMA_GENERATOR_SLOT = "ema_generator"
ENCODER_SLOT = "encoder"


def optimizer_steps(model: GenerativeModel) -> Any:
    """The variable counting the model's training steps (the generator optimizer's, for GANs)."""
    return model.optimizer.iterations if isinstance(model, VAE) else model.g_optimizer.iterations


def checkpoint_objects(model: GenerativeModel) -> dict[str, Any]:
    """The trackable objects a checkpoint holds, under the names restore code looks them up by.

    The network that draws images is `GENERATOR_SLOT` for every kind (a VAE's decoder), so export code
    can restore it without knowing the kind.
    """
    objects: dict[str, Any] = {GENERATOR_SLOT: model.generator, "noise_seed": model.noise_seed.state}
    if isinstance(model, VAE):
        objects.update({ENCODER_SLOT: model.encoder, "optimizer": model.optimizer})
        return objects
    objects.update(
        discriminator=model.discriminator, g_optimizer=model.g_optimizer, d_optimizer=model.d_optimizer
    )
    if model.ema_generator is not None:
        objects[EMA_GENERATOR_SLOT] = model.ema_generator
    return objects
