from pathlib import Path

from bench.train_bench import VARIANTS, VariantResult, format_seed_table
from genserve.store import EvaluationRecord
from training.classifier import LABEL_ACCURACY
from training.config import TrainConfig


def _result(variant: str, seed: int, fid: float, accuracy: float | None) -> VariantResult:
    details = {} if accuracy is None else {LABEL_ACCURACY: accuracy}
    evaluation = EvaluationRecord(
        dataset="mnist", num_samples=2000, fid=fid, inception_score=9.0, details=details
    )
    config = TrainConfig(dataset="mnist", name="bench", run_dir=Path("run"))
    return VariantResult(VARIANTS[variant], seed, config, 100, 250.0, 1.0, evaluation)


def _row(table: str, variant: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {variant} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_conditional_variants_get_their_mean_label_accuracy_and_a_verdict_per_seed() -> None:
    table = format_seed_table(
        [
            _result("cdcgan_concat", 0, 30.0, 0.80),
            _result("cdcgan_concat", 1, 28.0, 0.90),
            _result("cdcgan_projection", 0, 10.0, 0.99),
            _result("cdcgan_projection", 1, 29.0, 0.97),
        ]
    )

    header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    concat, projection = _row(table, "cdcgan_concat"), _row(table, "cdcgan_projection")
    assert len(header) == len(concat) == len(projection)
    column = header.index("requested class (mean)")
    assert concat[column] == "0.8500" and projection[column] == "0.9800"
    # Seed 1's FID is worse than the baseline's, so the switch has not won under every seed.
    assert projection[-1] == "no" and projection[header.index("FID mean ± half-range")] == "19.50 ± 9.50"
    assert table.splitlines()[1].count("|") == len(header) + 1


def test_tables_of_unconditional_variants_have_no_label_column() -> None:
    table = format_seed_table([_result("baseline", 0, 30.0, None), _result("labels", 0, 9.0, None)])

    assert "requested class" not in table
    assert _row(table, "labels")[-1] == "yes"


def test_an_unconditional_variant_beside_conditional_ones_has_no_label_accuracy() -> None:
    table = format_seed_table(
        [_result("baseline", 0, 30.0, None), _result("cdcgan_projection", 0, 9.0, 0.99)]
    )

    header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    column = header.index("requested class (mean)")
    assert _row(table, "baseline")[column] == "-"
    assert _row(table, "cdcgan_projection")[column] == "0.9900"
