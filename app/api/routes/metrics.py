"""GET /metrics in Prometheus' text format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import MetricsDep

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
async def metrics(collected: MetricsDep) -> Response:
    """Prometheus metrics: HTTP, generation, batching, model lifecycle and process."""
    return Response(collected.render(), media_type=CONTENT_TYPE_LATEST)
