"""Every training option in one dataclass with visible defaults; the CLI and the benchmarks only fill it.

The checks of the options the models take too (loss, DiffAugment policies, averaging, KL weight) live here,
free of TensorFlow, so the CLI answers bad options at once and the models reject them with the same words.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genserve.conventions import check_channels
from genserve.store import check_latent_scale, check_scalable, validate_model_name
from training.run_folder import DEFAULT_RUNS_ROOT, RUN_INFO_FILE

MODELS = ("dcgan", "cdcgan", "vae")
CONDITIONAL_MODELS = ("cdcgan",)
GAN_MODELS = ("dcgan", "cdcgan")
RECIPES = ("genserve", "tutorial")
GAN_LOSSES = ("bce", "hinge")
# How a conditional discriminator is told the class: a learned label map stacked onto the image as one more
# channel, or a projection (Miyato & Koyama 2018): the inner product of a learned class embedding with the
# discriminator's features is added to its logit.
CONDITIONINGS = ("concat", "projection")
# It beat "concat" under both seeds at equal wall time, in FID and in label accuracy (README, "Benchmarks").
DEFAULT_CONDITIONING = "projection"
DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")
SUPPORTED_IMAGE_SIZES = (28, 32, 64)
# How training spreads over devices (`training.distribute`): "auto" is "mirrored" when more than one GPU is
# visible, else "none"; "multi-worker" reads the cluster from TF_CONFIG.
DISTRIBUTE_MODES = ("auto", "none", "mirrored", "multi-worker")
# Each step moves the generator average 0.1% of the way to the current weights: it averages over roughly
# the last thousand steps, a few epochs of MNIST at batch 256.
DEFAULT_EMA_DECAY = 0.999
# One-sided smoothing makes the real target 1 - s; from s = 0.5 on, the discriminator would be taught that
# real images look no more real than a coin toss.
_MAX_LABEL_SMOOTHING = 0.5
# history.json key: the epoch after which the run's time budget stopped it (absent while a run can go on).
STOPPED_ON_TIME_BUDGET_KEY = "stopped_on_time_budget_after_epoch"
PRIOR_DIR = "prior"  # VAEs with a flow prior: the flow's weights, fit to the run's last epoch
# GANs trained with eval_every: the checkpoint whose epoch scored the lowest small-N FID so far, and its record.
BEST_DIR = "best"
BEST_FILE = "best.json"
# What a training run publishes at its end: its last epoch, or its BEST_DIR checkpoint.
PUBLISH_CHOICES = ("last", "best")
# latent_scale of a run that picks its scale at publication (`training.evaluate.pick_latent_scale`).
AUTO_LATENT_SCALE = "auto"
# Where a VAE's latents come from: the standard normal, or a normalizing flow of it fit to the encoder's
# posterior means after the VAE is trained (`training.prior`).
LATENT_PRIORS = ("normal", "flow")
DEFAULT_VAE_PRIOR = "flow"  # it beat "normal" under every seed at equal wall time (README, "Training")
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


@dataclass(kw_only=True)
class TrainConfig:
    """What to train, on what data, how, and where to put checkpoints and the exported model."""

    model: str = "dcgan"
    dataset: str
    name: str
    store: Path = Path("model_store")
    data_path: str | None = None
    epochs: int = 20
    # Batch 64 with a 2x wide discriminator beat batch 256 with the tutorial's discriminator under every seed
    # at equal wall time (README, "Benchmarks"); R1 on top of it did not, so it stays off.
    batch_size: int = 64
    latent_dim: int = 100
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta_1: float = 0.5
    # "tutorial" replaces lr_g, lr_d, beta_1 and ema_decay left at these defaults by TUTORIAL_SETTINGS.
    recipe: str = "genserve"
    ema_decay: float = DEFAULT_EMA_DECAY
    seed: int | None = 0
    image_size: int | None = None
    channels: int | None = None
    limit: int | None = None
    run_dir: Path | None = None
    resume: bool = False
    sample_grid: int = 8  # the per-epoch PNG shows sample_grid x sample_grid fixed seeds
    export: bool = True
    export_ema: bool = True
    jit_compile: bool = False
    mixed_precision: bool = False
    # One of DISTRIBUTE_MODES. batch_size is the global batch: each of R replicas takes batch_size / R rows.
    distribute: str = "auto"
    # GAN recipe options (dcgan, cdcgan), each off by default.
    loss: str = "bce"  # "bce" (the tutorial's) or "hinge"
    label_smoothing: float = 0.0  # one-sided: real targets become 1 - label_smoothing
    spectral_norm: bool = False  # spectral normalisation of the discriminator's weights
    diffaugment: str = ""  # comma-separated DiffAugment policies, e.g. "translation,cutout"
    # R1 penalty (Mescheder et al. 2018): gamma/2 * E|grad_x D(x)|^2 on real images, 0 turns it off. Lazy as in
    # StyleGAN2: computed every r1_interval discriminator steps and then weighted by r1_interval.
    r1_gamma: float = 0.0
    r1_interval: int = 16
    d_width: float = 2.0  # multiplies the discriminator's filter counts
    # Weight of the mode-seeking term (Mao et al. 2019) in the generator's loss, 0 turns it off.
    mode_seeking: float = 0.0
    conditioning: str | None = None  # conditional models: one of CONDITIONINGS; None: DEFAULT_CONDITIONING
    # Progress and limits.
    eval_every: int = 0  # every K epochs a small-N FID and class score go into history.json; 0 turns it off
    eval_samples: int = 2000
    time_budget: float | None = None  # minutes: stop before an epoch that would overrun them, then export
    publish: str = "last"  # one of PUBLISH_CHOICES; "best" needs eval_every
    # GANs: what the published graph multiplies its N(0, I) latents by (`ModelMetadata.latent_scale`), or
    # AUTO_LATENT_SCALE: the lowest small-N FID of a few scales, scored on the version about to be published.
    latent_scale: float | str = 1.0
    # VAE options.
    kl_weight: float = 1.0  # beta of a beta-VAE: weight of the KL term against the reconstruction term
    latent_prior: str | None = None  # one of LATENT_PRIORS; None: DEFAULT_VAE_PRIOR for VAEs, else "normal"
    # Epochs of fitting a flow prior (it stops early if the time budget runs out): on MNIST 60 scored FID 19.0, 30
    # scored 22.0 and 150 scored 18.6 (README, "Training").
    prior_epochs: int = 60

    @property
    def is_gan(self) -> bool:
        return self.model in GAN_MODELS

    @property
    def diffaugment_policies(self) -> tuple[str, ...]:
        return tuple(part.strip() for part in self.diffaugment.split(",") if part.strip())

    @property
    def conditional(self) -> bool:
        """Whether the model is told each image's class (and so needs labelled data)."""
        return self.model in CONDITIONAL_MODELS

    @property
    def network_time_budget(self) -> float | None:
        """Minutes the networks may train: the whole budget, less the flow prior's share if there is one."""
        if self.time_budget is None or self.latent_prior != "flow":
            return self.time_budget
        return self.time_budget * VAE_BUDGET_SHARE_WITH_PRIOR

    @property
    def dtype_policy(self) -> str:
        """Keras dtype policy of the hidden layers: bfloat16 compute with float32 weights, or plain float32."""
        return "mixed_bfloat16" if self.mixed_precision else "float32"

    def __post_init__(self) -> None:
        self.store = Path(self.store)
        self.run_dir = Path(self.run_dir) if self.run_dir is not None else DEFAULT_RUNS_ROOT / self.name
        self._apply_recipe()
        self._apply_model_defaults()
        self._validate()

    @property
    def run_path(self) -> Path:
        """The run folder (checkpoints, samples, history); `run_dir` after defaults are applied."""
        if self.run_dir is None:  # only reachable if someone assigns None after construction
            raise ValueError("run_dir is unset: pass run_dir or leave it to default to runs/<name>")
        return self.run_dir

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready options, paths as strings."""
        payload: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            payload[item.name] = str(value) if isinstance(value, Path) else value
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> TrainConfig:
        """The inverse of `to_dict`; keys this version does not know are ignored.

        Runs saved before latent priors existed sampled the standard normal, and conditional runs saved before
        the discriminator's conditioning was an option concatenated the class, whatever the defaults are now;
        runs of unconditional models saved while "concat" was every run's default keep no conditioning.
        """
        known = {item.name for item in dataclasses.fields(cls)}
        options = {"latent_prior": "normal", "conditioning": "concat", **payload}
        if options.get("model", "dcgan") not in CONDITIONAL_MODELS:
            options["conditioning"] = None
        return cls(**{key: value for key, value in options.items() if key in known})

    def _apply_recipe(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}: choose one of {', '.join(RECIPES)}")
        if self.recipe != "tutorial":
            return
        for key, tutorial_value in TUTORIAL_SETTINGS.items():
            if not self._left_at_default(key) and getattr(self, key) != tutorial_value:
                raise ValueError(
                    f"recipe 'tutorial' fixes {key}={tutorial_value} (the TF DCGAN tutorial's value); "
                    f"drop the {key} setting or use recipe 'genserve' to tune it"
                )
            setattr(self, key, tutorial_value)

    def _apply_model_defaults(self) -> None:
        """Give a VAE its own optimiser defaults where the GAN defaults were left in place, every model a latent
        prior, and a conditional one its discriminator's conditioning."""
        if self.latent_prior is None:
            self.latent_prior = DEFAULT_VAE_PRIOR if self.model == "vae" else "normal"
        if self.conditioning is None and self.conditional:
            self.conditioning = DEFAULT_CONDITIONING
        if self.model != "vae":
            return
        for key, value in VAE_SETTINGS.items():
            if self._left_at_default(key):
                setattr(self, key, value)

    def _left_at_default(self, key: str) -> bool:
        """Whether option `key` still holds its declared default, so a recipe or model kind may replace it."""
        defaults = {item.name: item.default for item in dataclasses.fields(self)}
        return bool(getattr(self, key) == defaults[key])

    def _validate(self) -> None:
        validate_model_name(self.name)
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose one of {', '.join(MODELS)}")
        if not self.dataset:
            raise ValueError("dataset is empty: name one, e.g. 'mnist', 'shapes' or 'folder:PATH'")
        _check_at_least("epochs", self.epochs, 1)
        _check_at_least("batch_size", self.batch_size, 1)
        _check_at_least("latent_dim", self.latent_dim, 1)
        _check_at_least("sample_grid", self.sample_grid, 1)
        if self.limit is not None:
            _check_at_least("limit", self.limit, 1)
        for key in ("lr_g", "lr_d"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be a positive learning rate, got {getattr(self, key)}")
        if not 0.0 <= self.beta_1 < 1.0:
            raise ValueError(f"beta_1 must be in [0, 1), got {self.beta_1}")
        check_ema_decay(self.ema_decay)
        if self.image_size is not None and self.image_size not in SUPPORTED_IMAGE_SIZES:
            raise ValueError(
                f"image_size {self.image_size} is not supported by the DCGAN: choose one of "
                f"{', '.join(map(str, SUPPORTED_IMAGE_SIZES))} or leave it unset to keep the dataset's size"
            )
        if self.channels is not None:
            check_channels(self.channels)
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        self._validate_model_options()
        check_distribute(self.distribute, jit_compile=self.jit_compile)
        if self.jit_compile and self.seed is not None:
            # Seeded runs enable TF op determinism, under which Keras silently turns XLA off.
            raise ValueError(
                "jit_compile needs an unseeded run (seed=None, --seed none): seeded runs are deterministic"
            )

    def _validate_model_options(self) -> None:
        check_loss(self.loss, self.label_smoothing)
        check_diffaugment_policies(self.diffaugment_policies)
        check_kl_weight(self.kl_weight)
        check_r1(self.r1_gamma, self.r1_interval)
        check_mode_seeking(self.mode_seeking)
        check_d_width(self.d_width)
        self._validate_progress_options()
        if self.conditioning is not None and self.conditioning not in CONDITIONINGS:
            raise ValueError(
                f"unknown conditioning {self.conditioning!r}: choose one of {', '.join(CONDITIONINGS)}"
            )
        if self.conditioning is not None and not self.conditional:
            raise ValueError(
                f"conditioning applies to conditional models ({', '.join(CONDITIONAL_MODELS)}), not to "
                f"{self.model!r}: drop it or use --model cdcgan"
            )
        if self.model == "vae":
            gan_only = {
                "loss": self.loss != "bce",
                "label_smoothing": self.label_smoothing > 0,
                "spectral_norm": self.spectral_norm,
                "diffaugment": bool(self.diffaugment_policies),
                "recipe": self.recipe != "genserve",
                "ema_decay": self.ema_decay > 0,
                "r1_gamma": self.r1_gamma > 0,
                "mode_seeking": self.mode_seeking > 0,
                "d_width": self.d_width != 1.0,
            }
            used = [key for key, is_set in gan_only.items() if is_set]
            if used:
                raise ValueError(f"{', '.join(used)} only apply to GANs (dcgan, cdcgan), not to model 'vae'")
        else:
            vae_only = {
                "kl_weight": self.kl_weight != 1.0,
                "latent_prior": self.latent_prior != "normal",
                "prior_epochs": not self._left_at_default("prior_epochs"),
            }
            used = [key for key, is_set in vae_only.items() if is_set]
            if used:
                verb = "applies" if len(used) == 1 else "apply"
                raise ValueError(f"{', '.join(used)} only {verb} to model 'vae', not to {self.model!r}")
        self._validate_prior_options()

    def _validate_prior_options(self) -> None:
        if self.latent_prior not in LATENT_PRIORS:
            raise ValueError(
                f"unknown latent prior {self.latent_prior!r}: choose one of {', '.join(LATENT_PRIORS)}"
            )
        _check_at_least("prior_epochs", self.prior_epochs, 1)

    def _validate_progress_options(self) -> None:
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(
                f"eval_every must be a whole number of epochs (0 turns the evaluation off), got {self.eval_every!r}"
            )
        _check_at_least("eval_samples", self.eval_samples, 2)
        if self.publish not in PUBLISH_CHOICES:
            raise ValueError(f"unknown publish {self.publish!r}: choose one of {', '.join(PUBLISH_CHOICES)}")
        if self.publish == "best" and not self.eval_every:
            raise ValueError(
                "publish 'best' picks the epoch with the lowest eval_every FID: set eval_every too"
            )
        check_train_latent_scale(self.latent_scale, self.model)
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(
                f"time_budget must be a positive number of minutes, got {self.time_budget}: leave it unset to "
                "train every epoch"
            )


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
    _check_at_least("r1_interval", r1_interval, 1)


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


def _check_at_least(key: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer of at least {minimum}, got {value!r}")


@dataclass(frozen=True)
class RunInfo:
    """What a run folder's config.json records: the options, and what the data turned out to be."""

    config: TrainConfig
    image_shape: tuple[int, int, int]
    dataset_class_names: list[str] | None = None
    # How the run was spread (`training.distribute.Placement.describe`): strategy, replicas, workers, and the
    # global and per-replica batch sizes.
    distribution: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "image_shape": list(self.image_shape),
            "dataset_class_names": self.dataset_class_names,
            "distribution": self.distribution,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> RunInfo:
        try:
            height, width, channels = (int(size) for size in payload["image_shape"])
            return cls(
                TrainConfig.from_dict(payload["config"]),
                (height, width, channels),
                payload.get("dataset_class_names"),
                payload.get("distribution"),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"{RUN_INFO_FILE} is not a genserve run description ({error!r})") from error


def read_run_info(run_dir: Path) -> RunInfo:
    """Read a run folder's config.json, or raise FileNotFoundError saying what a run folder is."""
    path = Path(run_dir) / RUN_INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist: pass a run folder written by 'training train'"
        )
    return RunInfo.from_dict(json.loads(path.read_text()))


def add_time_budget_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--time-budget`, as every trainer's command line offers it (`training.run.TimeBudget`)."""
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="MINUTES",
        help="stop before an epoch that would end past this much wall time (the first always runs), then "
        "publish as usual",
    )


def add_distribute_option(parser: argparse.ArgumentParser, default: str) -> None:
    """`--distribute`, as every trainer's command line offers it."""
    parser.add_argument(
        "--distribute",
        choices=DISTRIBUTE_MODES,
        default=default,
        help="train on several devices ('mirrored') or machines ('multi-worker', from TF_CONFIG); 'auto' "
        "mirrors over the GPUs when there are several; --batch-size is the global batch (default: %(default)s)",
    )
