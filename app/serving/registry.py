"""The registry: the models and versions known to the service, their status, and resolving requests to them."""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from app.server.errors import InvalidParameter, ModelNotFound, ModelNotReady, VersionNotFound
from app.serving.runtime import DeviceInfo
from app.serving.servable import Servable
from genserve.store import ModelMetadata

logger = logging.getLogger(__name__)

# Capabilities the image routes ask for: drawing images, walking between latents, and mapping images back to
# latents (VAEs: uploads and reconstructions).
GENERATE = "generate"
INTERPOLATE = "interpolate"
ENCODE = "encode"


class VersionStatus(str, enum.Enum):
    LOADING = "loading"
    AVAILABLE = "available"
    FAILED = "failed"


@dataclass
class ModelVersion:
    """One version of one model and, once loaded, the servable that serves it (of whichever kind)."""

    name: str
    version: int
    path: Path
    status: VersionStatus = VersionStatus.LOADING
    error: str | None = None
    servable: Servable | None = None
    warmup_s: float | None = None
    failed_attempts: int = 0
    retry_at: float | None = None

    @property
    def serving(self) -> Servable:
        """The servable of a loaded version; asking before it has loaded (or once it is retired) is a 503."""
        if self.servable is None:
            raise ModelNotReady(f"model {self.name!r} version {self.version} is not loaded")
        return self.servable

    @property
    def metadata(self) -> ModelMetadata:
        """Metadata of a loaded version; asking before it has loaded is a 503."""
        return self.serving.metadata


@dataclass
class ModelEntry:
    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    def latest_available(self) -> ModelVersion | None:
        ready = [v for v in self.versions.values() if v.status is VersionStatus.AVAILABLE]
        return max(ready, key=lambda v: v.version) if ready else None


class ModelRegistry:
    """What is loaded, and which version answers a request for (model, version or label)."""

    def __init__(self, store_path: Path, *, default_model: str | None = None) -> None:
        self.store_path = Path(store_path)
        self.device = DeviceInfo(name="not yet chosen", kind="none")
        self.closing = False
        self.scanned = False
        self._configured_default = default_model
        self._entries: dict[str, ModelEntry] = {}

    @property
    def entries(self) -> list[ModelEntry]:
        return [self._entries[name] for name in sorted(self._entries)]

    def entry(self, name: str) -> ModelEntry:
        """The entry for `name`, created empty if new."""
        return self._entries.setdefault(name, ModelEntry(name))

    def versions(self) -> Iterator[ModelVersion]:
        for entry in self._entries.values():
            yield from entry.versions.values()

    @property
    def default_model(self) -> str | None:
        if self._configured_default:
            return self._configured_default
        return min(self._entries) if self._entries else None

    def is_ready(self) -> bool:
        """True once the default model has a warmed-up version serving."""
        name = self.default_model
        entry = self._entries.get(name) if name else None
        return not self.closing and entry is not None and entry.latest_available() is not None

    def get_entry(self, name: str | None) -> ModelEntry:
        if not self.scanned:
            raise ModelNotReady("models are still being discovered")
        resolved = name or self.default_model
        if resolved is None:
            raise ModelNotFound(f"no models are loaded from {self.store_path.name!r}")
        entry = self._entries.get(resolved)
        if entry is None:
            raise ModelNotFound(f"model {resolved!r} not found; available: {sorted(self._entries) or 'none'}")
        return entry

    def resolve(
        self, name: str | None, version: int | str | None, *, capability: str | None = None
    ) -> ModelVersion:
        """The serving version for a request, or the 404/503 error that explains why there is none.

        `version` is None for the newest available version, a number, or a label such as "canary". A route
        that needs one of the servable's `capabilities` names it: a version without it is a 422.
        """
        model_version = self._resolve(name, version)
        servable = model_version.servable
        if capability is not None and servable is not None and capability not in servable.capabilities:
            raise InvalidParameter("model", f"{model_version.name!r} {servable.usage}")
        return model_version

    def _resolve(self, name: str | None, version: int | str | None) -> ModelVersion:
        entry = self.get_entry(name)
        if version is None:
            chosen = entry.latest_available()
            if chosen is None:
                raise _not_ready(entry)
            return chosen
        number = _label_target(entry, version) if isinstance(version, str) else version
        model_version = entry.versions.get(number)
        if model_version is None:
            raise VersionNotFound(
                f"model {entry.name!r} has no loaded version {number}; loaded: {sorted(entry.versions)}"
            )
        if model_version.status is not VersionStatus.AVAILABLE:
            raise _not_ready(entry, model_version)
        return model_version

    def resolve_encoder(self, name: str | None, version: int | str | None) -> ModelVersion:
        """Like `resolve`, for requests that upload images: the version must have an encoder (a VAE).

        Without a name, the default model is used if it can encode, else the first model that can.
        """
        model_version = self.resolve(name or self._default_encoder_model(), version, capability=GENERATE)
        if not _can_encode(model_version):
            choices = ", ".join(self._encoder_models()) or "none is loaded"
            raise InvalidParameter(
                "model",
                f"{model_version.name!r} is a {model_version.metadata.kind} and cannot encode images; use a "
                f"VAE ({choices})",
            )
        return model_version

    def _encoder_models(self) -> list[str]:
        """Names of models whose newest available version can encode images, sorted."""
        names = []
        for entry in self.entries:
            latest = entry.latest_available()
            if latest is not None and _can_encode(latest):
                names.append(entry.name)
        return names

    def _default_encoder_model(self) -> str:
        encoders = self._encoder_models()
        if self.default_model in encoders or not encoders:
            # Resolving the default reports what is wrong with it when no model can encode.
            return self.default_model or ""
        return encoders[0]

    def begin_draining(self) -> None:
        """Stop taking new work: readiness turns false and generation answers 503."""
        self.closing = True

    def pending_work(self) -> int:
        """Work (images, text sequences) queued or running, across every loaded version."""
        return sum(v.servable.pending() for v in self.versions() if v.servable is not None)


def _can_encode(model_version: ModelVersion) -> bool:
    servable = model_version.servable
    return servable is not None and ENCODE in servable.capabilities


def _label_target(entry: ModelEntry, label: str) -> int:
    if label not in entry.labels:
        known = ", ".join(sorted(entry.labels)) or "none"
        raise VersionNotFound(f"model {entry.name!r} has no version labelled {label!r}; labels: {known}")
    return entry.labels[label]


def _not_ready(entry: ModelEntry, model_version: ModelVersion | None = None) -> ModelNotReady:
    versions = [model_version] if model_version else list(entry.versions.values())
    if any(v.status is VersionStatus.LOADING for v in versions):
        return ModelNotReady(f"model {entry.name!r} is still loading")
    errors = "; ".join(f"version {v.version}: {v.error}" for v in versions if v.error)
    return ModelNotReady(f"model {entry.name!r} has no servable version ({errors or 'none loaded'})")
