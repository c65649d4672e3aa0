"""What a loaded version is to the rest of the service, whatever kind of model it is.

A version holds one `Servable`. The registry, the loader, the drain on shutdown, `/models`, `POST /generate` and
the inference protocols ask it what they need; none of them asks which kind of model it is. Each kind of model
is a package that implements `ModelKind` (loading its SavedModel) and `Servable` (serving it), registered once in
`app/main.py`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel
from starlette.requests import Request

from app.server.errors import ModelNotReady
from genserve import store
from genserve.signatures import Signature
from genserve.store import ModelMetadata

if TYPE_CHECKING:
    from fastapi.responses import Response

    from app.api.schemas import GenerateBody, VersionInfo
    from app.serving.registry import ModelVersion
    from app.serving.runtime import DeviceInfo

logger = logging.getLogger(__name__)


# Named tensors, as the inference protocols exchange them (strings as object arrays of bytes).
Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class CallContext:
    """What bounds one inference call: its time left, and the HTTP request whose client may leave (gRPC: none)."""

    timeout_s: float | None = None
    http_request: Request | None = None


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

    async def infer(self, model_version: ModelVersion, inputs: Tensors, call: CallContext) -> Tensors:
        """The signature's outputs for inputs already checked against the version's `signature` (the
        inference protocols)."""
        ...


class Batched(Protocol):
    """What a servable's batcher offers, whichever kind of batching it does."""

    @property
    def stats(self) -> Any: ...

    async def start(self) -> None: ...

    async def stop(self, *, drain: bool = True, timeout_s: float = 30.0) -> None: ...

    def pending(self) -> int: ...

    def pending_description(self) -> str: ...


BatcherT = TypeVar("BatcherT", bound=Batched)
BatcherT_co = TypeVar("BatcherT_co", bound=Batched, covariant=True)
RuntimeT = TypeVar("RuntimeT", bound="LoadedRuntime")
RuntimeT_contra = TypeVar("RuntimeT_contra", bound="LoadedRuntime", contravariant=True)


class LoadedRuntime(Protocol):
    """What every kind's runtime knows of its version once loaded."""

    @property
    def metadata(self) -> ModelMetadata: ...

    @property
    def device(self) -> DeviceInfo: ...

    @property
    def evaluation(self) -> BaseModel | None: ...


class BatcherMaker(Protocol[RuntimeT_contra, BatcherT_co]):
    """A kind's factory of batchers for its versions."""

    def batcher(self, name: str, version: int, runtime: RuntimeT_contra) -> BatcherT_co: ...


class BatchedServable(Generic[RuntimeT, BatcherT]):
    """What every kind's servable shares: its runtime's metadata, device and evaluation (read once, at load), and
    the batcher its kind makes for the version when it starts. A kind adds its signature, capabilities, usage
    and `_describe`."""

    # Set by each kind, once: what `/models` lists and routes ask for.
    capabilities: list[str]

    def __init__(self, runtime: RuntimeT, kind: BatcherMaker[RuntimeT, BatcherT]) -> None:
        self.runtime = runtime
        self.metadata = runtime.metadata
        self.device = runtime.device
        self.evaluation = runtime.evaluation
        self._kind = kind
        self._batcher: BatcherT | None = None

    @property
    def batcher(self) -> BatcherT:
        if self._batcher is None:
            raise ModelNotReady(f"model {self.metadata.name!r} is not started")
        return self._batcher

    async def start(self, name: str, version: int) -> None:
        batcher = self._kind.batcher(name, version, self.runtime)
        await batcher.start()
        self._batcher = batcher

    async def stop(self, *, drain: bool, timeout_s: float = 30.0) -> None:
        if self._batcher is not None:
            await self._batcher.stop(drain=drain, timeout_s=timeout_s)

    def pending(self) -> int:
        return 0 if self._batcher is None else self._batcher.pending()

    def pending_description(self) -> str:
        return self.batcher.pending_description()

    def describe(self, info: VersionInfo) -> None:
        metadata = self.metadata
        info.kind = metadata.kind
        info.dataset = metadata.dataset
        info.created = metadata.created
        info.source = metadata.source
        info.origin = metadata.origin or None
        info.device = self.device.name
        info.evaluation = self.evaluation.model_dump(mode="json") if self.evaluation else None
        info.capabilities = list(self.capabilities)
        if self._batcher is not None:
            info.batching = dataclasses.asdict(self._batcher.stats)
        self._describe(info)

    def _describe(self, info: VersionInfo) -> None:
        """What `/models` shows of this kind beyond what every kind shows."""


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
