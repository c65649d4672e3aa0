"""Which versions of a model to serve: `latest`, `latest:N`, `all`, or a list like `3,5`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PolicyMode = Literal["latest", "all", "specific"]


@dataclass(frozen=True)
class VersionPolicy:
    mode: PolicyMode = "latest"
    count: int = 1
    versions: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """Read a policy string; ValueError says what is accepted."""
        cleaned = text.strip().lower()
        if cleaned == "all":
            return cls(mode="all")
        if cleaned == "latest":
            return cls(mode="latest", count=1)
        if cleaned.startswith("latest:"):
            count = cleaned.removeprefix("latest:")
            if count.isdigit() and int(count) >= 1:
                return cls(mode="latest", count=int(count))
        elif cleaned and all(part.strip().isdigit() and int(part) >= 1 for part in cleaned.split(",")):
            return cls(mode="specific", versions=tuple(sorted({int(part) for part in cleaned.split(",")})))
        raise ValueError(
            f"version policy {text!r} must be 'latest', 'latest:N' (N >= 1), 'all' or e.g. '1,3'"
        )

    def select(self, complete: list[int]) -> set[int]:
        """The versions to serve out of the complete ones on disk."""
        if self.mode == "all":
            return set(complete)
        if self.mode == "specific":
            return set(complete) & set(self.versions)
        return set(sorted(complete)[-self.count :])
