"""The model-store contract: names, versions, completion markers, atomic publication, and reads that never wait."""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def test_a_published_version_is_as_readable_as_the_umask_says(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        version = store.publish_version(tmp_path, metadata(), write_dummy)
        store.write_evaluation(
            version, store.TextEvaluationRecord(dataset="x", num_samples=1, bits_per_char=2.0)
        )
    finally:
        os.umask(previous)

    # Another user (a container's service user) reads every folder and file.
    assert stat.S_IMODE(version.stat().st_mode) == 0o755
    for name in (store.METADATA_FILE, store.EVALUATION_FILE, store.COMPLETE_MARKER):
        assert stat.S_IMODE((version / name).stat().st_mode) == 0o644, name


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
        ValueError, match="latent_scale only applies to GANs \\(dcgan, cdcgan, specgan\\), not to 'vae'"
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


def error_of(call: Callable[[], object], timeout_s: float = 10.0) -> BaseException:
    """What `call` raises, run on a daemon thread: a call stuck opening a named pipe fails the test, not hangs it."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert outcome, f"still waiting after {timeout_s} s"
    assert outcome[0] is not None, "returned instead of raising"
    return outcome[0]


def unix_socket_at(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    return listener


@pytest.mark.parametrize(
    ("read", "file"),
    [
        (store.read_metadata, store.METADATA_FILE),
        (store.read_evaluation, store.EVALUATION_FILE),
        (store.read_text_evaluation, store.EVALUATION_FILE),
    ],
)
def test_a_named_pipe_in_a_version_is_refused_without_waiting(
    tmp_path: Path, read: Callable[[Path], object], file: str
) -> None:
    version = store.publish_version(tmp_path, metadata(), write_dummy)
    (version / file).unlink(missing_ok=True)
    os.mkfifo(version / file)
    error = error_of(lambda: read(version))
    assert isinstance(error, store.StoreFileError)
    assert str(error) == f"{version / file} is a named pipe (FIFO), not a regular file"


def test_labels_that_are_a_named_pipe_are_refused_without_waiting(tmp_path: Path) -> None:
    store.publish_version(tmp_path, metadata(), write_dummy)
    os.mkfifo(tmp_path / "demo" / store.LABELS_FILE)
    error = error_of(lambda: store.read_labels(tmp_path, "demo"))
    assert isinstance(error, ValueError) and "labels.json is a named pipe" in str(error)


def test_a_socket_and_a_link_to_a_device_are_not_regular_files(tmp_path: Path) -> None:
    with unix_socket_at(tmp_path / "socket.json"):
        with pytest.raises(store.StoreFileError, match="socket.json is a socket, not a regular file"):
            store.read_regular_file(tmp_path / "socket.json", 100)
    (tmp_path / "device.json").symlink_to("/dev/zero")
    with pytest.raises(store.StoreFileError, match="device.json is a device, not a regular file"):
        store.read_regular_file(tmp_path / "device.json", 100)
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(store.StoreFileError, match="folder.json is a folder"):
        store.read_regular_file(tmp_path / "folder.json", 100)


def test_a_regular_file_is_read_whole_up_to_its_limit(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    (tmp_path / "file").write_bytes(data)
    (tmp_path / "link").symlink_to(tmp_path / "file")
    assert store.read_regular_file(tmp_path / "file", len(data)) == data
    assert store.read_regular_file(tmp_path / "link", len(data)) == data
    with pytest.raises(store.StoreFileError, match=f"larger than {len(data) - 1} bytes"):
        store.read_regular_file(tmp_path / "file", len(data) - 1)
    with pytest.raises(FileNotFoundError):
        store.read_regular_file(tmp_path / "missing", 10)


def test_a_named_pipe_swapped_in_after_the_type_check_is_refused_not_waited_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = tmp_path / "genserve.json"
    os.mkfifo(pipe)
    real_stat = os.stat

    def regular_at_first(path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> os.stat_result:
        # What the type check saw a moment before the swap: a regular file.
        if Path(str(path)) == pipe:
            return os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 10, 0, 0, 0))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", regular_at_first)
    error = error_of(lambda: store.read_regular_file(pipe, 100))
    assert isinstance(error, store.StoreFileError) and "named pipe" in str(error)


def test_saved_model_files_must_be_regular_files_or_folders(tmp_path: Path) -> None:
    version = store.publish_version(tmp_path, metadata(), write_dummy)
    (version / "variables").mkdir()
    (version / "variables" / "variables.index").write_bytes(b"index")
    (version / "variables" / "loop").symlink_to(version)  # a link back up is walked once
    os.mkfifo(version / store.EVALUATION_FILE)  # the store's own files are read safely, not walked
    store.check_saved_model_files(version)

    os.mkfifo(version / "variables" / "variables.data-00000-of-00001")
    error = error_of(lambda: store.check_saved_model_files(version))
    assert isinstance(error, store.StoreFileError)
    assert str(error) == (
        f"{version}/variables/variables.data-00000-of-00001 is a named pipe (FIFO), not a regular file or folder"
    )


def test_a_socket_in_a_version_folder_is_refused(tmp_path: Path) -> None:
    version = store.publish_version(tmp_path, metadata(), write_dummy)
    with unix_socket_at(version / "saved_model.sock"):
        with pytest.raises(store.StoreFileError, match="saved_model.sock is a socket"):
            store.check_saved_model_files(version)
