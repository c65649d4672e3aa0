"""The documented numbers against what they describe: the bundled models' evaluations (the README's summary and
docs/models.md) and the recipe tables (docs/benchmarks.md).

A retrained or re-evaluated bundled model whose rows were not updated fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from genserve import store
from genserve.store import EvaluationRecord, ModelMetadata

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MODELS_PAGE = ROOT / "docs" / "models.md"
BENCHMARKS_PAGE = ROOT / "docs" / "benchmarks.md"
BUNDLED_STORE = ROOT / "model_store"

Row = dict[str, str]


def section(title: str, page: Path = MODELS_PAGE) -> list[str]:
    """The lines of `page`'s section `## title`, up to the next heading of the same level."""
    lines = page.read_text().splitlines()
    start = lines.index(f"## {title}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def first_table(lines: list[str], having: str = "") -> list[Row]:
    """The rows of the first markdown table in `lines` whose header contains `having`, keyed by the header's cells."""
    start = next(
        i
        for i, line in enumerate(lines)
        if line.startswith("|") and having in line and not lines[i - 1].startswith("|")
    )
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, body = rows[0], rows[2:]  # rows[1] is the |---| separator
    return [dict(zip(header, row, strict=True)) for row in body]


def column(row: Row, prefix: str) -> str:
    [key] = [key for key in row if key.startswith(prefix)]
    return row[key]


def shown(value: float, text: str) -> str:
    """`value` printed with as many decimals as `text`, the way the README shows it."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return f"{value:.{decimals}f}"


def found(pattern: str, text: str) -> tuple[str, ...]:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in {text!r}"
    return match.groups()


def number(pattern: str, text: str) -> str:
    return found(pattern, text)[0]


def named_rows(table: list[Row]) -> dict[str, tuple[int, Row]]:
    """Rows by the model they name, with the version each names."""
    rows = {}
    for row in table:
        name, version = found(r"^`([a-z0-9.-]+)` v(\d+)$", row["model"])
        rows[name] = (int(version), row)
    return rows


def bundled_rows() -> dict[str, tuple[int, Row]]:
    """README row of each bundled image model, by name, with the version it names."""
    return named_rows(first_table(section("Bundled models")))


def bundled_text_rows() -> dict[str, tuple[int, Row]]:
    """README row of each bundled text model (the section's table with bits per character)."""
    return named_rows(first_table(section("Bundled models"), having="bits/char"))


def bundled_sound_rows() -> dict[str, tuple[int, Row]]:
    """README row of each bundled sound model (the section's table with clips heard as asked)."""
    return named_rows(first_table(section("Bundled models"), having="heard as asked"))


def bundled_version(name: str) -> tuple[ModelMetadata, EvaluationRecord]:
    version = store.latest_version(BUNDLED_STORE, name)
    assert version is not None, f"{name} has no complete version in {BUNDLED_STORE}"
    folder = store.version_dir(BUNDLED_STORE, name, version)
    evaluation = store.read_evaluation(folder)
    assert evaluation is not None, f"{folder} has no {store.EVALUATION_FILE}"
    return store.read_metadata(folder), evaluation


def test_the_tables_list_the_served_version_of_every_bundled_model() -> None:
    rows = bundled_rows() | bundled_text_rows() | bundled_sound_rows()
    assert sorted(rows) == store.list_models(BUNDLED_STORE)
    assert not set(bundled_rows()) & (set(bundled_text_rows()) | set(bundled_sound_rows()))
    for name, (version, _) in rows.items():
        assert version == store.latest_version(BUNDLED_STORE, name), name


@pytest.mark.parametrize("name", sorted(bundled_sound_rows()))
def test_bundled_sound_model_row_matches_its_evaluation_and_metadata(name: str) -> None:
    _, row = bundled_sound_rows()[name]
    metadata, evaluation = bundled_version(name)

    assert metadata.kind == "specgan"
    fid, score = column(row, "FID"), column(row, "class score")
    assert fid == shown(evaluation.fid, fid) and score == shown(evaluation.inception_score, score)
    heard = number(r"([\d.]+)%", column(row, "heard as asked"))
    assert heard == shown(100 * evaluation.details["label_accuracy"], heard)
    real = column(row, "real held-out")
    assert evaluation.real_fid is not None and evaluation.real_inception_score is not None
    real_fid, real_score = number(r"FID ([\d.]+)", real), number(r"score ([\d.]+)", real)
    assert real_fid == shown(evaluation.real_fid, real_fid)
    assert real_score == shown(evaluation.real_inception_score, real_score)
    assert int(number(r"(\d+) epochs", row["training"])) == metadata.epochs
    assert f"latent scale {metadata.latent_scale:g}" in row["training"]


@pytest.mark.parametrize("name", sorted(bundled_rows()))
def test_bundled_model_row_matches_its_evaluation_and_metadata(name: str) -> None:
    _, row = bundled_rows()[name]
    metadata, evaluation = bundled_version(name)
    details: dict[str, Any] = evaluation.details

    fid, score = column(row, "classifier-feature FID"), column(row, "class score")
    assert fid == shown(evaluation.fid, fid)
    assert score == shown(evaluation.inception_score, score)
    real = column(row, "real held-out")
    real_fid, real_score = number(r"FID ([\d.]+)", real), number(r"score ([\d.]+)", real)
    assert evaluation.real_fid is not None and evaluation.real_inception_score is not None
    assert real_fid == shown(evaluation.real_fid, real_fid)
    assert real_score == shown(evaluation.real_inception_score, real_score)

    training = row["training"]
    assert int(number(r"(\d+) epochs", training)) == metadata.epochs
    precision = "bfloat16" if metadata.training_config.get("mixed_precision") else "float32"
    assert precision in training
    if "label smoothing" in training:
        smoothing = number(r"label smoothing ([\d.]+)", training)
        assert float(smoothing) == metadata.training_config["label_smoothing"]
    if "-d latent" in training:
        assert int(number(r"(\d+)-d latent", training)) == metadata.latent_dim

    generates = row["generates"]
    if "every class at" in generates:
        fractions = details["generated_class_fractions"]
        low, high = found(r"every class at ([\d.]+)–([\d.]+)%", generates)
        assert low == shown(100 * min(fractions), low) and high == shown(100 * max(fractions), high)
    if "classified as the requested" in generates:
        accuracy = number(r"(\d+)% classified as the requested", generates)
        assert int(accuracy) == round(100 * details["label_accuracy"])
    if "reconstructed at" in generates:
        reconstruction_fid = number(r"reconstructed at FID ([\d.]+)", generates)
        error = number(r"mean pixel error ([\d.]+)/255", generates)
        agreement = number(r"(\d+)% still classified", generates)
        assert reconstruction_fid == shown(details["reconstruction_fid"], reconstruction_fid)
        assert error == shown(details["reconstruction_mean_abs_error"], error)
        assert int(agreement) == round(100 * details["reconstruction_class_agreement"])


@pytest.mark.parametrize("name", sorted(bundled_text_rows()))
def test_bundled_text_model_row_matches_its_evaluation_and_metadata(name: str) -> None:
    _, row = bundled_text_rows()[name]
    folder = store.version_dir(BUNDLED_STORE, name, store.latest_version(BUNDLED_STORE, name) or 0)
    metadata, evaluation = store.read_metadata(folder), store.read_text_evaluation(folder)
    assert evaluation is not None and metadata.text is not None

    bits = column(row, "held-out bits/char")
    assert bits == shown(evaluation.bits_per_char, bits)
    assert row["unigram"] == shown(evaluation.details["unigram_bits_per_char"], row["unigram"])
    assert row["5-gram"] == shown(evaluation.details["5gram_bits_per_char"], row["5-gram"])
    text = metadata.text
    assert f"{text.cell.upper()} {text.layers}×{text.units}" in row["network"]
    assert int(number(r"(\d+) epochs", row["training"])) == metadata.epochs


def test_bundled_numbers_use_the_sample_count_the_readme_names() -> None:
    text = "\n".join(section("Bundled models"))
    samples = int(number(r"at N = ([\d,]+)", text).replace(",", ""))
    for name in bundled_rows():
        assert bundled_version(name)[1].num_samples == samples, name


def test_recipe_table_ratios_follow_its_fids() -> None:
    rows = first_table(section("Benchmarks", BENCHMARKS_PAGE), having="FID / baseline")
    baseline = rows[0]
    assert baseline["variant"].startswith("baseline")
    for row in rows:
        ratios = [float(ratio.rstrip("×")) for ratio in row["FID / baseline (seed 0, seed 1)"].split(", ")]
        for seed, ratio in zip(("FID seed 0", "FID seed 1"), ratios, strict=False):
            assert ratio == round(float(row[seed]) / float(baseline[seed]), 2), (row["variant"], seed)


def test_recipe_comparison_means_follow_its_seeds() -> None:
    rows = first_table(section("Benchmarks", BENCHMARKS_PAGE), having="FID mean ± half-range")
    assert len(rows) >= 2
    for row in rows:
        seeds = [float(row["FID seed 0"]), float(row["FID seed 1"])]
        mean, half_range = (float(part) for part in row["FID mean ± half-range"].split(" ± "))
        # Printed to two decimals: within half a unit of the last digit (and of float rounding).
        assert abs(mean - sum(seeds) / 2) <= 0.0051, row["variant"]
        assert abs(half_range - (max(seeds) - min(seeds)) / 2) <= 0.0051, row["variant"]


def test_the_readme_summary_shows_each_bundled_models_documented_score() -> None:
    summary = {
        found(r"^`([a-z0-9.-]+)`$", row["model"])[0]: row["quality"]
        for row in first_table(section("Bundled models", README), having="quality")
    }
    assert sorted(summary) == store.list_models(BUNDLED_STORE)
    for name, (_, row) in bundled_rows().items():
        assert f"FID {column(row, 'classifier-feature FID')}" in summary[name], name
    for name, (_, row) in bundled_text_rows().items():
        assert f"{column(row, 'held-out bits/char')} held-out bits/char" in summary[name], name


def test_the_readme_comparison_with_the_peers_is_the_benchmark_pages_table() -> None:
    readme = first_table(section("Train your own, deploy it", README), having="best of")
    documented = {
        row["cell"]: column(row, "genserve ÷ best peer").split(" ")[0]
        for row in first_table(BENCHMARKS_PAGE.read_text().splitlines(), having="genserve ÷ best peer")
    }

    assert readme
    for row in readme:
        n, clients = (part.strip() for part in row["images per request, concurrent clients"].split(","))
        assert documented[f"n={n}, c={clients}"] == column(row, "genserve ÷"), row
