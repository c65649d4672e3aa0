"""Parsing and applying version policies."""

from __future__ import annotations

import pytest

from app.serving.version_policy import VersionPolicy


@pytest.mark.parametrize(
    ("text", "complete", "expected"),
    [
        ("latest", [1, 2, 3], {3}),
        ("latest:2", [1, 2, 3], {2, 3}),
        ("latest:5", [1, 2], {1, 2}),
        ("all", [1, 4], {1, 4}),
        ("1,3", [1, 2, 3], {1, 3}),
        ("2,9", [1, 2], {2}),
        ("latest", [], set()),
    ],
)
def test_policies_select_versions(text: str, complete: list[int], expected: set[int]) -> None:
    assert VersionPolicy.parse(text).select(complete) == expected


@pytest.mark.parametrize("text", ["", "newest", "latest:0", "latest:x", "1,,2", "0", "-1"])
def test_bad_policies_are_rejected_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="latest:N"):
        VersionPolicy.parse(text)
