"""What a training run can be asked for: the choices each option takes, the defaults that won, and the checks
every option passes (a ValueError that says how to fix it), for `TrainConfig` and the command line alike."""

from __future__ import annotations

import math
from collections.abc import Sequence

from genserve.store import check_latent_scale, check_scalable

MODELS = ("dcgan", "cdcgan", "vae")
CONDITIONAL_MODELS = ("cdcgan",)
GAN_MODELS = ("dcgan", "cdcgan")
RECIPES = ("genserve", "tutorial")
GAN_LOSSES = ("bce", "hinge")
# How a conditional discriminator is told the class: a learned label map stacked onto the image as one more
# channel, or a projection (Miyato & Koyama 2018): the inner product of a learned class embedding with the
# discriminator's features is added to its logit.
CONDITIONINGS = ("concat", "projection")
# It beat "concat" under both seeds at equal wall time, in FID and in label accuracy (docs/benchmarks.md).
DEFAULT_CONDITIONING = "projection"
DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")
SUPPORTED_IMAGE_SIZES = (28, 32, 64, 128)
# How training spreads over devices (`training.distribute`): "auto" is "mirrored" when more than one GPU is
# visible, else "none"; "multi-worker" reads the cluster from TF_CONFIG.
DISTRIBUTE_MODES = ("auto", "none", "mirrored", "multi-worker")
# Each step moves the generator average 0.1% of the way to the current weights: it averages over roughly
# the last thousand steps, a few epochs of MNIST at batch 256.
DEFAULT_EMA_DECAY = 0.999
# One-sided smoothing makes the real target 1 - s; from s = 0.5 on, the discriminator would be taught that
# real images look no more real than a coin toss.
_MAX_LABEL_SMOOTHING = 0.5
# What a training run publishes at its end: its last epoch, or its BEST_DIR checkpoint.
PUBLISH_CHOICES = ("last", "best")
# latent_scale of a run that picks its scale at publication (`training.evaluate.pick_latent_scale`).
AUTO_LATENT_SCALE = "auto"
# Where a VAE's latents come from: the standard normal, or a normalizing flow of it fit to the encoder's
# posterior means after the VAE is trained (`training.prior`).
LATENT_PRIORS = ("normal", "flow")
DEFAULT_VAE_PRIOR = "flow"  # it beat "normal" under every seed at equal wall time (docs/training.md)
# Under a time budget, a VAE with a flow prior trains for this share of it and the flow is fit in the rest.
VAE_BUDGET_SHARE_WITH_PRIOR = 0.9

# The TensorFlow DCGAN tutorial's settings: Adam(1e-4) for both networks, Keras' default beta_1, batch 256,
# its discriminator's width, no R1 and no weight averaging. `recipe="tutorial"` pins these so a comparison
# run cannot drift from them.
TUTORIAL_SETTINGS: dict[str, float] = {
    "lr_g": 1e-4,
    "lr_d": 1e-4,
    "beta_1": 0.9,
    "ema_decay": 0.0,
    "batch_size": 256,
    "d_width": 1.0,
    "r1_gamma": 0.0,
}
# A VAE has one network and one optimizer (lr_g); Adam's usual settings suit it better than the GAN's.
# They replace lr_g and beta_1 left at the GAN defaults; the VAE keeps no weight average, has no
# discriminator to widen or regularise, and keeps the batch of 256 it was tuned with.
VAE_SETTINGS: dict[str, float] = {
    "lr_g": 1e-3,
    "beta_1": 0.9,
    "ema_decay": 0.0,
    "batch_size": 256,
    "d_width": 1.0,
    "r1_gamma": 0.0,
}


def check_distribute(distribute: str, *, jit_compile: bool = False) -> str:
    """`distribute` if it names a mode of `DISTRIBUTE_MODES` that suits the other options, else ValueError."""
    if distribute not in DISTRIBUTE_MODES:
        raise ValueError(
            f"unknown distribute mode {distribute!r}: choose one of {', '.join(DISTRIBUTE_MODES)}"
        )
    if jit_compile and distribute in ("mirrored", "multi-worker"):
        raise ValueError(
            f"jit_compile runs on one device: drop it, or use --distribute none (not {distribute!r})"
        )
    return distribute


def check_train_latent_scale(latent_scale: float | str, model: str) -> None:
    """What `genserve.store.check_latent_scale` accepts for `model`, or AUTO_LATENT_SCALE for a GAN."""
    if latent_scale != AUTO_LATENT_SCALE:
        if isinstance(latent_scale, str):
            raise ValueError(
                f"latent_scale must be a positive number or {AUTO_LATENT_SCALE!r}, got {latent_scale!r}"
            )
        check_latent_scale(latent_scale, model)
    else:
        check_scalable(model)


def check_r1(r1_gamma: float, r1_interval: int) -> None:
    """Raise ValueError unless `r1_gamma` and `r1_interval` describe a usable (lazy) R1 penalty."""
    if not r1_gamma >= 0:
        raise ValueError(f"r1_gamma must be 0 (off) or positive, got {r1_gamma}: try 0.1 to 10")
    check_at_least("r1_interval", r1_interval, 1)


def check_mode_seeking(weight: float) -> float:
    """`weight` if it is a usable mode-seeking weight (0 turns the term off), else ValueError."""
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"mode_seeking must be 0 (off) or a positive weight, got {weight}: try 0.1 to 1")
    return weight


def check_d_width(d_width: float) -> float:
    """`d_width` if it is a usable multiplier of the discriminator's filter counts, else ValueError."""
    if not 0.25 <= d_width <= 8.0:
        raise ValueError(f"d_width must be between 0.25 and 8 (1 is the tutorial's width), got {d_width}")
    return d_width


def check_ema_decay(ema_decay: float) -> float:
    """`ema_decay` if it is a usable decay for the generator average, else ValueError."""
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}: use 0 to disable averaging")
    return ema_decay


def check_kl_weight(kl_weight: float) -> float:
    """`kl_weight` if it is a usable VAE KL weight, else ValueError."""
    if not kl_weight > 0:
        raise ValueError(f"kl_weight must be positive, got {kl_weight}")
    return kl_weight


def check_loss(loss: str, label_smoothing: float) -> None:
    """Raise ValueError unless `loss` is a GAN loss and `label_smoothing` suits it."""
    if loss not in GAN_LOSSES:
        raise ValueError(f"unknown loss {loss!r}: choose one of {', '.join(GAN_LOSSES)}")
    if not 0.0 <= label_smoothing < _MAX_LABEL_SMOOTHING:
        raise ValueError(
            f"label_smoothing must be in [0, {_MAX_LABEL_SMOOTHING}), got {label_smoothing}: 0 turns it off"
        )
    if label_smoothing and loss != "bce":
        raise ValueError("label_smoothing applies to the 'bce' loss only: the hinge loss has no targets")


def check_diffaugment_policies(policies: Sequence[str]) -> tuple[str, ...]:
    """The DiffAugment policies asked for, in the order they are applied, or ValueError naming the bad one."""
    if isinstance(policies, str):
        raise ValueError(
            f"diffaugment takes a sequence of policy names, got the string {policies!r}: pass e.g. "
            "('translation', 'cutout')"
        )
    unknown = [policy for policy in policies if policy not in DIFFAUGMENT_POLICIES]
    if unknown:
        raise ValueError(
            f"unknown DiffAugment policy {unknown[0]!r}: choose from {', '.join(DIFFAUGMENT_POLICIES)}"
        )
    return tuple(policy for policy in DIFFAUGMENT_POLICIES if policy in policies)


def check_at_least(key: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer of at least {minimum}, got {value!r}")
