"""The headers answers carry, whatever the kind of model: the version that answered, the seeds it drew from."""

from __future__ import annotations

from app.serving.registry import ModelVersion


def model_headers(model_version: ModelVersion) -> dict[str, str]:
    """The headers naming the model version that answered."""
    return {"X-Model": model_version.name, "X-Model-Version": str(model_version.version)}


def seeds_header(seeds: list[int] | None) -> dict[str, str]:
    """`X-Seeds`: the one seed, or the first and last of a range; nothing without seeds."""
    if not seeds:
        return {}
    return {"X-Seeds": f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])}
