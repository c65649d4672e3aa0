"""A text generator version as a servable: a `TextRuntime` behind its continuous batcher.

`text_servable` is how the text pipeline reaches a version's runtime and batcher; what it answers to
`POST /generate` and the inference protocols is its kind's (`app/text/kind.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.api.schemas import VersionInfo
from app.server.errors import InvalidParameter
from app.serving.registry import ModelVersion
from app.serving.servable import BatchedServable
from app.text.batching import TextBatcher
from app.text.runtime import TextRuntime
from genserve.signatures import TEXT_SIGNATURE, Signature

if TYPE_CHECKING:
    from app.text.kind import TextKind

# The capability of every text generator: what routes that only write text ask for.
GENERATE_TEXT = "generate_text"
# What `POST /generate` answers for a text generator, the default first (`stream` adds server-sent events).
TEXT_FORMATS = ["json", "text"]


class TextServable(BatchedServable[TextRuntime, TextBatcher]):
    """One text generator version: its runtime, and its continuous batcher once started."""

    usage = "generates text: use POST /generate with a prompt"
    signature: Signature = TEXT_SIGNATURE
    capabilities = [GENERATE_TEXT, "stream"]

    def __init__(self, runtime: TextRuntime, kind: TextKind) -> None:
        super().__init__(runtime, kind)
        self.kind = kind

    def _describe(self, info: VersionInfo) -> None:
        info.vocabulary_size = self.runtime.vocabulary_size
        info.formats = list(TEXT_FORMATS)


def text_servable(model_version: ModelVersion) -> TextServable:
    """The version's text generator; a 503 while it is not loaded, a 422 when it makes something else."""
    servable = model_version.serving
    if not isinstance(servable, TextServable):
        raise InvalidParameter("model", f"{model_version.name!r} {servable.usage}")
    return servable
