"""OpenAI's completions API under `/openai/v1`: `POST /completions`, `GET /models` and `GET /models/{id}`, for
the text generators, so OpenAI's clients work with `base_url="http://host:8000/openai/v1"`.

The routes only parse and hand over: `serving.Completions` turns the fields into text requests for the same
continuous batchers as `POST /generate`, and errors come back in OpenAI's shape (`errors.OpenAIErrorRoute`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from app.api.deps import CompletionsDep
from app.protocols.openai.errors import OpenAIErrorRoute
from app.protocols.openai.protocol import CompletionRequest, ModelCard, ModelList

# Left out of /docs like the other protocols' routes: OpenAI's API reference describes them.
router = APIRouter(
    prefix="/openai/v1", tags=["openai"], route_class=OpenAIErrorRoute, include_in_schema=False
)

ModelIdPath = Annotated[str, Path(description="A text model's name, or name:version.")]


@router.post("/completions")
async def create_completion(
    body: CompletionRequest, http_request: Request, completions: CompletionsDep
) -> Response:
    """Continue each prompt n times; `stream: true` sends the text as server-sent events as it is written."""
    return await completions.create(body, http_request)


@router.get("/models")
async def list_models(completions: CompletionsDep) -> ModelList:
    """The text models that have a version serving."""
    return completions.models()


@router.get("/models/{model_id}")
async def retrieve_model(model_id: ModelIdPath, completions: CompletionsDep) -> ModelCard:
    """One text model; 404 when there is none of that name."""
    return completions.model(model_id)
