"""A text generator version as a servable: a `TextRuntime` behind its continuous batcher.

`text_servable` is how the text pipeline reaches a version's runtime and batcher; what it answers to
`POST /generate` and the inference protocols is its kind's (`app/text/kind.py`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from app.api.schemas import VersionInfo
from app.server.errors import InvalidParameter
from app.serving.registry import ModelVersion
from app.serving.servable import BatcherSlot
from app.text.batching import TextBatcher
from app.text.runtime import TextRuntime
from genserve.signatures import TEXT_SIGNATURE, Signature

if TYPE_CHECKING:
    from app.text.kind import TextKind


class TextServable:
    """One text generator version: its runtime, and its continuous batcher once started."""

    usage = "generates text: use POST /generate with a prompt"
    signature: Signature = TEXT_SIGNATURE
    capabilities = ["generate_text", "stream"]

    def __init__(self, runtime: TextRuntime, kind: TextKind) -> None:
        self.runtime = runtime
        self.metadata = runtime.metadata
        self.device = runtime.device
        self._kind = kind
        self._slot: BatcherSlot[TextBatcher] = BatcherSlot(self.metadata.name)

    @property
    def kind(self) -> TextKind:
        return self._kind

    @property
    def batcher(self) -> TextBatcher:
        return self._slot.get()

    async def start(self, name: str, version: int) -> None:
        await self._slot.start(self._kind.batcher(name, version, self.runtime))

    async def stop(self, *, drain: bool, timeout_s: float = 30.0) -> None:
        await self._slot.stop(drain=drain, timeout_s=timeout_s)

    def pending(self) -> int:
        batcher = self._slot.started
        if batcher is None:
            return 0
        return batcher.queued_sequences + batcher.active_sequences

    def pending_description(self) -> str:
        batcher = self.batcher
        return f"{batcher.queued_sequences} queued and {batcher.active_sequences} active sequences"

    def describe(self, info: VersionInfo) -> None:
        metadata, evaluation = self.metadata, self.runtime.evaluation
        info.kind = metadata.kind
        info.dataset = metadata.dataset
        info.created = metadata.created
        info.device = self.device.name
        info.vocabulary_size = self.runtime.vocabulary_size
        info.evaluation = evaluation.model_dump(mode="json") if evaluation else None
        info.capabilities = list(self.capabilities)
        batcher = self._slot.started
        if batcher is not None:
            info.batching = dataclasses.asdict(batcher.stats)


def text_servable(model_version: ModelVersion) -> TextServable:
    """The version's text generator; a 503 while it is not loaded, a 422 when it makes something else."""
    servable = model_version.serving
    if not isinstance(servable, TextServable):
        raise InvalidParameter("model", f"{model_version.name!r} {servable.usage}")
    return servable
