"""`python -m training evaluate`: score a published version (or sweep its latent scales) and print a table.

The scoring itself is `training.evaluate`'s; this module loads the data at the model's size, stores the record
and prints it.
"""

from __future__ import annotations

from pathlib import Path

from genserve.store import EvaluationRecord, read_metadata, write_evaluation
from training.classifier import LABEL_ACCURACY
from training.evaluate import LABEL_ACCURACY_BY_CLASS, datasets_for, evaluate_version, sweep_latent_scales


def evaluate_command(
    version_dir: Path,
    *,
    dataset: str,
    data_path: str | None,
    num_samples: int,
    cache_dir: Path | None,
    seed: int,
) -> EvaluationRecord:
    """Evaluate a version against `dataset` at the model's image size, store and print the result."""
    train, held_out = datasets_for(read_metadata(version_dir), dataset, data_path, seed)
    record = evaluate_version(
        Path(version_dir),
        train=train,
        held_out=held_out,
        num_samples=num_samples,
        cache_dir=cache_dir,
        seed=seed,
    )
    write_evaluation(Path(version_dir), record)
    print(_format_record(record))
    return record


def sweep_command(
    version_dir: Path,
    scales: list[float],
    *,
    dataset: str,
    data_path: str | None,
    num_samples: int,
    cache_dir: Path | None,
    seed: int,
) -> list[EvaluationRecord]:
    """Score a GAN's version at each latent scale in `scales` and print one row per scale; store nothing."""
    train, held_out = datasets_for(read_metadata(version_dir), dataset, data_path, seed)
    records = sweep_latent_scales(
        Path(version_dir),
        scales,
        train=train,
        held_out=held_out,
        num_samples=num_samples,
        cache_dir=cache_dir,
        seed=seed,
    )
    print(_format_sweep(scales, records))
    return records


def _format_sweep(scales: list[float], records: list[EvaluationRecord]) -> str:
    """One row per latent scale, the lowest FID marked; real data's numbers below."""
    best = min(range(len(records)), key=lambda index: records[index].fid)
    rows = [f"{'latent scale':<14}{'FID':>10}{'class score':>13}{'classes':>16}{'label acc.':>12}"]
    for index, (scale, record) in enumerate(zip(scales, records, strict=True)):
        fractions = record.details["generated_class_fractions"]
        spread = f"{min(fractions):.1%}-{max(fractions):.1%}"
        accuracy = _number(record.details.get(LABEL_ACCURACY))
        mark = "  <- lowest FID" if index == best else ""
        rows.append(
            f"{scale:<14g}{record.fid:>10.3f}{record.inception_score:>13.3f}{spread:>16}{accuracy:>12}{mark}"
        )
    first = records[0]
    rows.append(
        f"{'real':<14}{_number(first.real_fid):>10}{_number(first.real_inception_score):>13}"
        f"   ({first.num_samples} samples, seed {first.details['seed']})"
    )
    return "\n".join(rows)


def _format_record(record: EvaluationRecord) -> str:
    """A small plain-text table of the model's numbers next to the real-data reference."""
    real_n = record.details.get("real_num_samples", "-")
    rows = [
        f"{'':<8}{'samples':>10}{'FID':>12}{'class score':>13}",
        f"{'model':<8}{record.num_samples:>10}{record.fid:>12.3f}{record.inception_score:>13.3f}",
        f"{'real':<8}{real_n:>10}{_number(record.real_fid):>12}{_number(record.real_inception_score):>13}",
        f"classifier accuracy on held-out {record.dataset}: {_number(record.classifier_accuracy)}",
    ]
    if LABEL_ACCURACY in record.details:
        rows.append(f"generated samples of the requested class: {_number(record.details[LABEL_ACCURACY])}")
    by_class = record.details.get(LABEL_ACCURACY_BY_CLASS)
    if by_class:
        rows.append("  by class: " + ", ".join(_number(value) for value in by_class))
    if "reconstruction_fid" in record.details:
        details = record.details
        rows.append(
            f"reconstructions of held-out images: FID {_number(details['reconstruction_fid'])}, mean abs "
            f"pixel error {_number(details['reconstruction_mean_abs_error'])}, class kept "
            f"{_number(details.get('reconstruction_class_agreement'))}"
        )
    return "\n".join(rows)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
