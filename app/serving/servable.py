"""What a loaded version is to the rest of the service, whatever kind of model it is.

A version holds one `Servable`. The registry, the loader, the drain on shutdown, `/models`, `POST /generate` and
the inference protocols ask it what they need; none of them asks which kind of model it is. Each kind of model
is a package that implements `ModelKind` (loading its SavedModel) and `Servable` (serving it), registered once in
`app/main.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import numpy as np

from app.server.errors import ModelNotReady
from genserve import store
from genserve.signatures import Signature
from genserve.store import ModelMetadata

if TYPE_CHECKING:
    from fastapi.responses import Response
    from starlette.requests import Request

    from app.api.schemas import GenerateBody, VersionInfo
    from app.serving.registry import ModelVersion
    from app.serving.runtime import DeviceInfo

logger = logging.getLogger(__name__)


class Servable(Protocol):
    """One loaded, warmed-up version: its metadata and signature, the work it holds, and its kind."""

    metadata: ModelMetadata
    device: DeviceInfo

    @property
    def kind(self) -> ModelKind:
        """Its kind of model, which answers requests for it."""
        ...

    @property
    def signature(self) -> Signature:
        """Its `serving_default` signature as named tensors (the inference protocols check requests with it)."""
        ...

    @property
    def capabilities(self) -> list[str]:
        """What it can do, as `/models` lists it; routes ask for one before they serve a version."""
        ...

    @property
    def usage(self) -> str:
        """What it makes and where to ask for it, for the 422 of a route it cannot serve."""
        ...

    async def start(self, name: str, version: int) -> None:
        """Start taking work (on the event loop)."""
        ...

    async def stop(self, *, drain: bool, timeout_s: float = 30.0) -> None:
        """Stop taking work: finish what is queued and running first when `drain`, else fail it with 503."""
        ...

    def pending(self) -> int:
        """Units of work (images, sequences) queued or running."""
        ...

    def pending_description(self) -> str:
        """The pending work in words, for the log."""
        ...

    def describe(self, info: VersionInfo) -> None:
        """Fill what `/models` shows of it."""
        ...


class ModelKind(Protocol):
    """One kind of model: which versions it serves, loading one, and what requests for it mean."""

    def serves(self, metadata: ModelMetadata) -> bool: ...

    def load(self, path: Path, device: DeviceInfo) -> Servable:
        """The version at `path`, loaded and warmed up, not yet started (blocking; runs on a worker thread)."""
        ...

    async def generate(
        self, model_version: ModelVersion, fields: GenerateBody, http_request: Request
    ) -> Response:
        """Answer `POST /generate` for one of its versions: it decides what the fields mean."""
        ...

    async def infer(
        self,
        model_version: ModelVersion,
        inputs: dict[str, np.ndarray],
        *,
        timeout_s: float | None,
        http_request: Request | None,
    ) -> dict[str, np.ndarray]:
        """The signature's outputs for inputs already checked against the version's `signature` (the
        inference protocols)."""
        ...


class Batched(Protocol):
    """What a servable's batcher does for its lifecycle (both batchers have it)."""

    async def start(self) -> None: ...

    async def stop(self, *, drain: bool = True, timeout_s: float = 30.0) -> None: ...


BatcherT = TypeVar("BatcherT", bound=Batched)


class BatcherSlot(Generic[BatcherT]):
    """A servable's batcher: none until `start`, then the one its kind made for the version."""

    def __init__(self, model_name: str) -> None:
        self._model_name = model_name
        self._batcher: BatcherT | None = None

    @property
    def started(self) -> BatcherT | None:
        return self._batcher

    def get(self) -> BatcherT:
        if self._batcher is None:
            raise ModelNotReady(f"model {self._model_name!r} is not started")
        return self._batcher

    async def start(self, batcher: BatcherT) -> None:
        await batcher.start()
        self._batcher = batcher

    async def stop(self, *, drain: bool, timeout_s: float) -> None:
        if self._batcher is not None:
            await self._batcher.stop(drain=drain, timeout_s=timeout_s)


class ModelKinds:
    """The kinds of model this service serves; a version is loaded by the first that serves its metadata.

    A version whose metadata cannot be read goes to the first kind, whose loader reports why.
    """

    def __init__(self, kinds: Sequence[ModelKind]) -> None:
        if not kinds:
            raise ValueError("a service needs at least one kind of model")
        self._kinds = list(kinds)

    def load(self, path: Path, device: DeviceInfo) -> Servable:
        return self._kind_for(path).load(path, device)

    def _kind_for(self, path: Path) -> ModelKind:
        try:
            metadata = store.read_metadata(path)
        except (OSError, ValueError):
            return self._kinds[0]
        return next((kind for kind in self._kinds if kind.serves(metadata)), self._kinds[0])
