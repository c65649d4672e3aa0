"""Every training option in one dataclass with visible defaults; the CLI and the benchmarks only fill it.

The checks of the options the models take too (loss, DiffAugment policies, averaging, KL weight) live here,
free of TensorFlow, so the CLI answers bad options at once and the models reject them with the same words.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genserve.conventions import check_channels
from genserve.store import validate_model_name
from training.audio.data import is_sound_spec
from training.options import (
    CONDITIONAL_MODELS,
    CONDITIONINGS,
    DEFAULT_CONDITIONING,
    DEFAULT_EMA_DECAY,
    DEFAULT_VAE_PRIOR,
    GAN_MODELS,
    LATENT_PRIORS,
    MODELS,
    PUBLISH_CHOICES,
    RECIPES,
    SUPPORTED_IMAGE_SIZES,
    TUTORIAL_SETTINGS,
    VAE_BUDGET_SHARE_WITH_PRIOR,
    VAE_SETTINGS,
    check_at_least,
    check_d_width,
    check_diffaugment_policies,
    check_distribute,
    check_ema_decay,
    check_kl_weight,
    check_loss,
    check_mode_seeking,
    check_r1,
    check_train_latent_scale,
)
from training.run_folder import DEFAULT_RUNS_ROOT


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
    # at equal wall time (docs/benchmarks.md); R1 on top of it did not, so it stays off.
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
    # cdcgan on images without labels: this many k-means clusters of the images (`training.clusters`) are its
    # classes, never the dataset's labels; the run is published unconditionally. 0: the dataset's labels.
    pseudo_classes: int = 0
    # With pseudo-classes: every this many epochs they are found again in the discriminator's features
    # (`training.reclustering`); 0 keeps the first clusters.
    recluster_every: int = 0
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
    # scored 22.0 and 150 scored 18.6 (docs/training.md).
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
        check_at_least("epochs", self.epochs, 1)
        check_at_least("batch_size", self.batch_size, 1)
        check_at_least("latent_dim", self.latent_dim, 1)
        check_at_least("sample_grid", self.sample_grid, 1)
        if self.limit is not None:
            check_at_least("limit", self.limit, 1)
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
        if self.model == "vae" and is_sound_spec(self.dataset):
            raise ValueError(
                f"dataset {self.dataset!r} is sound, which trains a GAN on spectrograms: use --model cdcgan "
                "(or dcgan without classes)"
            )
        if self.conditioning is not None and self.conditioning not in CONDITIONINGS:
            raise ValueError(
                f"unknown conditioning {self.conditioning!r}: choose one of {', '.join(CONDITIONINGS)}"
            )
        if self.recluster_every and (not self.pseudo_classes or self.recluster_every < 0):
            raise ValueError(
                f"recluster_every {self.recluster_every} needs pseudo_classes (--pseudo-classes K) and a period of "
                "at least 1 epoch: it finds a run's pseudo-classes again as the discriminator learns"
            )
        if self.recluster_every and self.conditioning not in (None, "projection"):
            raise ValueError(
                "recluster_every reads a projection discriminator's features: use --conditioning projection"
            )
        if self.pseudo_classes and (not self.conditional or self.pseudo_classes < 2):
            raise ValueError(
                f"pseudo_classes takes a conditional model ({', '.join(CONDITIONAL_MODELS)}) and at least 2 "
                f"clusters, got model {self.model!r} and {self.pseudo_classes}: use --model cdcgan, or 0 for the "
                "dataset's labels"
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
        check_at_least("prior_epochs", self.prior_epochs, 1)

    def _validate_progress_options(self) -> None:
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(
                f"eval_every must be a whole number of epochs (0 turns the evaluation off), got {self.eval_every!r}"
            )
        check_at_least("eval_samples", self.eval_samples, 2)
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
