"""The model-store contract: names, versions, completion markers and atomic publication."""

from __future__ import annotations

from pathlib import Path

import pytest

from genserve import store
from genserve.store import EvaluationRecord, ModelMetadata


def metadata(name: str = "demo") -> ModelMetadata:
    return ModelMetadata(
        name=name, kind="dcgan", latent_dim=4, image_shape=(8, 8, 1), channels=1, dataset="x", epochs=1
    )


def write_dummy(folder: Path) -> None:
    (folder / "saved_model.pb").write_bytes(b"model")


@pytest.mark.parametrize("name", ["../x", "", "A", "-x", "a/b", "a" * 65, ".hidden"])
def test_unsafe_model_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        store.validate_model_name(name)


def test_publish_numbers_versions_and_marks_them_complete(tmp_path: Path) -> None:
    first = store.publish_version(tmp_path, metadata(), write_dummy)
    second = store.publish_version(tmp_path, metadata(), write_dummy)
    assert (first.name, second.name) == ("1", "2")
    assert store.list_versions(tmp_path, "demo") == [1, 2]
    assert store.read_metadata(second).latent_dim == 4
    assert store.is_complete(second)
    assert not [p for p in (tmp_path / "demo").iterdir() if p.name.startswith(store.TEMP_PREFIX)]


def test_folders_without_the_marker_are_ignored_but_never_reused(tmp_path: Path) -> None:
    (tmp_path / "demo" / "3").mkdir(parents=True)
    assert store.list_versions(tmp_path, "demo") == []
    assert store.list_models(tmp_path) == []
    published = store.publish_version(tmp_path, metadata(), write_dummy)
    assert published.name == "4"
    assert store.list_models(tmp_path) == ["demo"]


def test_failed_write_leaves_no_version_behind(tmp_path: Path) -> None:
    def fail(_: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.publish_version(tmp_path, metadata(), fail)
    assert list((tmp_path / "demo").iterdir()) == []


def test_evaluation_is_written_atomically_beside_the_version(tmp_path: Path) -> None:
    version = store.publish_version(tmp_path, metadata(), write_dummy)
    assert store.read_evaluation(version) is None
    store.write_evaluation(
        version, EvaluationRecord(dataset="x", num_samples=10, fid=1.5, inception_score=2.0)
    )
    record = store.read_evaluation(version)
    assert record is not None and record.fid == 1.5
    assert sorted(p.name for p in version.iterdir()) == sorted(
        [store.COMPLETE_MARKER, store.EVALUATION_FILE, store.METADATA_FILE, "saved_model.pb"]
    )


def test_scan_skips_and_reports_folders_that_name_nothing(tmp_path: Path) -> None:
    store.publish_version(tmp_path, metadata(), write_dummy)
    for odd in ["a" * 65, "Bad", "demo/²", "demo/007", "demo/+3", "demo/" + "9" * 12]:
        (tmp_path / odd).mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "demo" / ".tmp-staging").mkdir()
    (tmp_path / "notes.txt").write_text("not a folder")
    scan = store.scan_store(tmp_path)
    assert scan.models == {"demo": [1]}
    reasons = {entry.path: entry.reason for entry in scan.skipped}
    assert set(reasons) == {"a" * 65, "Bad", "demo/\\xb2", "demo/007", "demo/+3", "demo/" + "9" * 12}
    assert store.list_models(tmp_path) == ["demo"] and store.list_versions(tmp_path, "demo") == [1]
    assert store.publish_version(tmp_path, metadata(), write_dummy).name == "2"


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("1", 1),
        ("42", 42),
        ("0", None),
        ("007", None),
        ("²", None),
        ("٣", None),
        ("1" * 10, None),
        ("", None),
    ],
)
def test_only_canonical_ascii_decimals_name_versions(name: str, version: int | None) -> None:
    assert store.parse_version_name(name) == version


@pytest.mark.parametrize("name", ["demo\n", "demo ", "a" * 65])
def test_model_names_match_whole(name: str) -> None:
    assert not store.is_model_name(name)


def test_a_latent_scale_is_recorded_for_gans_and_refused_for_other_kinds() -> None:
    scaled = metadata().model_copy(update={"latent_scale": 1.25})
    assert ModelMetadata.model_validate_json(scaled.model_dump_json()).latent_scale == 1.25
    assert metadata().latent_scale == 1.0  # versions published before the field read as unscaled

    with pytest.raises(
        ValueError, match="latent_scale only applies to GANs \\(dcgan, cdcgan\\), not to 'vae'"
    ):
        ModelMetadata(
            name="v",
            kind="vae",
            latent_dim=4,
            image_shape=(8, 8, 1),
            channels=1,
            dataset="x",
            epochs=1,
            latent_scale=1.2,
        )
    with pytest.raises(ValueError, match="latent_scale"):
        ModelMetadata.model_validate({**metadata().model_dump(), "latent_scale": 0.0})
