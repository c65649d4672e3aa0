import json
from pathlib import Path

import pytest

from tests.commands import run_module
from training.cli import build_parser, main
from training.config import TrainConfig
from training.options import DEFAULT_CONDITIONING, DEFAULT_VAE_PRIOR, TUTORIAL_SETTINGS
from training.train_options import train_config_from_args

TRAIN = ["train", "--dataset", "shapes", "--name", "cli-test"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epochs", "0"], "epochs must be"),
        (["--batch-size", "-4"], "batch_size must be"),
        (["--image-size", "48"], "image_size 48 is not supported"),
        (["--ema-decay", "1.0"], "ema_decay must be"),
        (["--recipe", "tutorial", "--lr-g", "3e-4"], "recipe 'tutorial' fixes lr_g"),
        (["--name", "Not A Name"], "invalid model name"),
        (["--jit-compile"], "jit_compile needs an unseeded run"),
        (["--loss", "hinge", "--label-smoothing", "0.1"], "label_smoothing applies to the 'bce' loss only"),
        (["--diffaugment", "translation,blur"], "unknown DiffAugment policy 'blur'"),
        (["--label-smoothing", "0.6"], "label_smoothing must be in [0, 0.5)"),
        (["--model", "vae", "--spectral-norm"], "spectral_norm only apply to GANs"),
        (["--kl-weight", "0.5"], "kl_weight only applies to model 'vae'"),
        (["--latent-prior", "flow"], "latent_prior only applies to model 'vae'"),
        (["--model", "vae", "--prior-epochs", "0"], "prior_epochs must be an integer of at least 1"),
        (["--r1-gamma", "-1"], "r1_gamma must be 0 (off) or positive"),
        (["--r1-interval", "0"], "r1_interval must be an integer of at least 1"),
        (["--d-width", "0.1"], "d_width must be between 0.25 and 8"),
        (["--conditioning", "projection"], "conditioning applies to conditional models"),
        (["--model", "vae", "--r1-gamma", "1"], "r1_gamma only apply to GANs"),
        (["--mode-seeking", "-0.5"], "mode_seeking must be 0 (off) or a positive weight"),
        (["--mode-seeking", "nan"], "mode_seeking must be 0 (off) or a positive weight"),
        (["--model", "vae", "--mode-seeking", "1"], "mode_seeking only apply to GANs"),
        (["--eval-every", "-1"], "eval_every must be a whole number of epochs"),
        (["--eval-samples", "1"], "eval_samples must be an integer of at least 2"),
        (["--time-budget", "0"], "time_budget must be a positive number of minutes"),
        (["--publish", "best"], "set eval_every too"),
        (
            ["--model", "vae", "--latent-scale", "1.2"],
            "latent_scale only applies to GANs (dcgan, cdcgan, specgan)",
        ),
        (
            ["--model", "vae", "--latent-scale", "auto"],
            "latent_scale only applies to GANs (dcgan, cdcgan, specgan)",
        ),
    ],
)
def test_bad_train_options_exit_2_with_one_line(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*TRAIN, *extra]) == 2

    error = capsys.readouterr().err.strip()
    assert message in error
    assert "\n" not in error and "Traceback" not in error


def test_missing_required_argument_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["train", "--name", "cli-test"])

    assert exited.value.code == 2
    assert "--dataset" in capsys.readouterr().err


def test_unparsable_seed_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*TRAIN, "--seed", "abc"])

    assert exited.value.code == 2
    assert "expected an integer or 'none'" in capsys.readouterr().err


def test_unseeded_runs_may_use_xla() -> None:
    config = train_config_from_args(build_parser().parse_args([*TRAIN, "--seed", "none", "--jit-compile"]))

    assert config.seed is None and config.jit_compile


def test_export_of_a_missing_run_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "missing"), "--store", str(tmp_path / "store")]) == 2

    assert "neither a run folder nor a checkpoint" in capsys.readouterr().err


def test_evaluate_of_a_missing_version_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path / "missing"), "--dataset", "shapes"]) == 2

    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments",
    [
        ["export", "runs/x", "--latent-scale", "0"],
        ["export", "runs/x", "--latent-scale", "inf"],
        ["export", "runs/x", "--latent-scale", "auto"],
        ["train", "--dataset", "shapes", "--name", "x", "--latent-scale", "wide"],
        ["evaluate", "model_store/x/1", "--dataset", "mnist", "--latent-scales", "1,-1"],
        ["evaluate", "model_store/x/1", "--dataset", "mnist", "--latent-scales", "1,,2"],
    ],
)
def test_latent_scales_must_be_positive_numbers(
    arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(arguments)

    assert exited.value.code == 2
    assert "expected a positive number" in capsys.readouterr().err


def test_train_arguments_fill_the_config() -> None:
    args = build_parser().parse_args(
        [
            *TRAIN,
            "--epochs",
            "3",
            "--latent-dim",
            "8",
            "--limit",
            "64",
            "--run-dir",
            "somewhere",
            "--no-export",
        ]
    )

    config = train_config_from_args(args)

    assert config == TrainConfig(
        dataset="shapes",
        name="cli-test",
        epochs=3,
        latent_dim=8,
        limit=64,
        run_dir=Path("somewhere"),
        export=False,
    )


def test_defaults_match_the_config_defaults() -> None:
    config = train_config_from_args(build_parser().parse_args(TRAIN))

    assert config == TrainConfig(dataset="shapes", name="cli-test")
    assert config.run_dir == Path("runs/cli-test")


def test_tutorial_recipe_pins_the_tutorial_optimizer_settings() -> None:
    config = train_config_from_args(build_parser().parse_args([*TRAIN, "--recipe", "tutorial"]))

    assert {key: getattr(config, key) for key in TUTORIAL_SETTINGS} == TUTORIAL_SETTINGS
    assert config.batch_size == 256


def test_config_round_trips_through_json() -> None:
    config = TrainConfig(dataset="npz:data/x.npz", name="round-trip", recipe="tutorial", image_size=32)

    payload = json.loads(json.dumps(config.to_dict()))

    assert payload["store"] == "model_store" and payload["run_dir"] == "runs/round-trip"
    assert TrainConfig.from_dict(payload) == config


def test_a_cdcgan_gets_the_projection_discriminator_unless_told_otherwise() -> None:
    assert DEFAULT_CONDITIONING == "projection"
    assert train_config_from_args(build_parser().parse_args([*TRAIN, "--model", "cdcgan"])).conditioning == (
        "projection"
    )
    concat = [*TRAIN, "--model", "cdcgan", "--conditioning", "concat"]
    assert train_config_from_args(build_parser().parse_args(concat)).conditioning == "concat"
    assert train_config_from_args(build_parser().parse_args(TRAIN)).conditioning is None


def test_runs_saved_under_the_old_conditioning_default_load_as_they_were_trained() -> None:
    conditional = TrainConfig(dataset="mnist", name="old-cdcgan", model="cdcgan").to_dict()
    unconditional = TrainConfig(dataset="mnist", name="old-dcgan").to_dict()
    del conditional["conditioning"]  # saved before the option existed: the class was concatenated
    unconditional["conditioning"] = "concat"  # saved while "concat" was every run's default

    assert TrainConfig.from_dict(conditional).conditioning == "concat"
    assert TrainConfig.from_dict(unconditional).conditioning is None


def test_module_entry_point_reports_bad_arguments_without_a_traceback() -> None:
    completed = run_module("training", *TRAIN, "--epochs", "0", timeout_s=60)

    assert completed.returncode == 2
    assert completed.stderr.strip() == (
        "python -m training train: error: epochs must be an integer of at least 1, got 0"
    )


def test_recipe_and_vae_flags_fill_the_config() -> None:
    gan = train_config_from_args(
        build_parser().parse_args(
            [*TRAIN, "--loss", "hinge", "--spectral-norm", "--diffaugment", "translation, cutout"]
        )
    )
    vae = train_config_from_args(build_parser().parse_args([*TRAIN, "--model", "vae", "--kl-weight", "0.5"]))

    assert (gan.loss, gan.spectral_norm, gan.diffaugment_policies) == (
        "hinge",
        True,
        ("translation", "cutout"),
    )
    assert (vae.model, vae.kl_weight, vae.lr_g, vae.beta_1, vae.ema_decay) == ("vae", 0.5, 1e-3, 0.9, 0.0)


def test_latent_prior_flags_fill_the_config() -> None:
    flow = ["--model", "vae", "--latent-prior", "flow", "--prior-epochs", "7"]
    config = train_config_from_args(build_parser().parse_args([*TRAIN, *flow]))
    default = train_config_from_args(build_parser().parse_args([*TRAIN, "--model", "vae"]))

    assert (config.latent_prior, config.prior_epochs) == ("flow", 7)
    assert default.latent_prior == DEFAULT_VAE_PRIOR
    assert train_config_from_args(build_parser().parse_args(TRAIN)).latent_prior == "normal"


def test_r1_width_conditioning_and_progress_flags_fill_the_config() -> None:
    args = [
        *TRAIN,
        "--model",
        "cdcgan",
        "--r1-gamma",
        "0.5",
        "--r1-interval",
        "8",
        "--d-width",
        "2",
        "--conditioning",
        "projection",
        "--eval-every",
        "3",
        "--eval-samples",
        "500",
        "--time-budget",
        "55",
        "--publish",
        "best",
    ]
    config = train_config_from_args(build_parser().parse_args(args))

    assert (config.r1_gamma, config.r1_interval, config.d_width, config.conditioning) == (
        0.5,
        8,
        2.0,
        "projection",
    )
    assert (config.eval_every, config.eval_samples, config.time_budget, config.publish) == (
        3,
        500,
        55.0,
        "best",
    )


_START_UP_NOISE = ("oneDNN", "cuda", "cuInit", "absl::InitializeLog", "cpu_feature_guard")


def test_commands_keep_tensorflow_start_up_messages_off_the_console(tmp_path: Path) -> None:
    completed = run_module("training", "export", str(tmp_path / "no-run"), unset=["TF_CPP_MIN_LOG_LEVEL"])

    assert completed.returncode == 2
    assert completed.stderr.startswith("python -m training export: error: ")
    assert not [word for word in _START_UP_NOISE if word in completed.stderr + completed.stdout]
    assert len(completed.stderr.strip().splitlines()) == 1


def test_train_with_the_text_model_hands_over_to_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", "char-rnn", "--help"])
    assert exit_info.value.code == 0
    assert "--sequence-length" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["train", "export", "evaluate"])
def test_every_command_prints_its_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m training {command}")
    assert "%(" not in out
