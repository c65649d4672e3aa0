"""Published options name no path of the machine that trained, and identify the data by its content."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from training.provenance import content_hash, dataset_location, portable_dataset, portable_options

ROOT = Path(__file__).resolve().parents[2]


def test_paths_inside_the_project_become_relative_and_others_are_left_out(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "runs").mkdir(parents=True)
    data = tmp_path / "elsewhere" / "digits.npz"
    data.parent.mkdir()
    data.write_bytes(b"pixels")
    options = {
        "dataset": f"npz:{data}",
        "data_path": None,
        "run_dir": str(project / "runs" / "digits"),
        "store": "/srv/models",
        "epochs": 3,
    }

    published = portable_options(options, dataset_location(f"npz:{data}", None), root=project)

    assert published == {
        "dataset": "npz:digits.npz",
        "data_path": None,
        "run_dir": "runs/digits",
        "store": None,
        "epochs": 3,
        "data_sha256": hashlib.sha256(b"pixels").hexdigest(),
    }
    assert options["store"] == "/srv/models"  # the run's own options are left as they were


def test_a_dataset_inside_the_project_keeps_its_relative_path(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    assert portable_dataset(f"folder:{tmp_path / 'data'}", tmp_path) == "folder:data"
    assert portable_dataset("mnist", tmp_path) == "mnist"


def test_a_folder_hash_covers_its_files_names_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"1")
    first = content_hash(tmp_path / "a")
    (tmp_path / "a" / "x.png").rename(tmp_path / "a" / "y.png")
    renamed = content_hash(tmp_path / "a")
    (tmp_path / "a" / "y.png").write_bytes(b"2")

    assert len({first, renamed, content_hash(tmp_path / "a")}) == 3


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def test_no_bundled_version_records_an_absolute_path() -> None:
    found = []
    for path in sorted((ROOT / "model_store").rglob("*.json")):
        # A one-character string is a vocabulary entry, such as "/", not a path.
        absolute = [
            text for text in _strings(json.loads(path.read_text())) if len(text) > 1 and text[0] == "/"
        ]
        absolute += [
            text for text in _strings(json.loads(path.read_text())) if re.match(r"^[A-Za-z]:[\\/]", text)
        ]
        found += [f"{path.relative_to(ROOT)}: {text}" for text in absolute]

    assert not found, found
