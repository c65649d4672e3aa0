"""What the kinds of generators that draw from latents share (`app/image/kind.py`, `app/audio/kind.py`): a
version's batcher as the settings configure it (`latent_batcher`), and the checks of a `POST /generate` body that
need no model (`latent_request`, `refuse_text_fields`).
"""

from __future__ import annotations

from app.api import params
from app.api.schemas import TEXT_FIELDS, GenerateBody, GenerateFormat
from app.config import Settings
from app.latent.batching import Batcher, BatchingConfig, BatchObserver, RunBatch
from app.latent.generation import LatentRequest
from app.metrics import Metrics
from app.server import tracing
from app.server.errors import InvalidParameter
from app.serving.registry import ModelVersion


def latent_batcher(
    settings: Settings,
    metrics: Metrics,
    name: str,
    version: int,
    run: RunBatch,
    observer: BatchObserver,
    *,
    on_cpu: bool,
    unit: str = "images",
) -> Batcher:
    """A version's adaptive batcher as the settings configure it, reporting its batches to `observer` and its
    queue to `metrics` (image and sound generators alike: its rows are images or clips)."""
    config = BatchingConfig(
        max_batch_size=settings.max_batch_size,
        max_delay_ms=settings.max_delay_ms,
        max_queue_images=settings.max_queue_images,
        allowed_batch_sizes=tuple(settings.allowed_batch_sizes),
        max_concurrent_batches=settings.max_concurrent_batches,
        adaptive_delay=settings.adaptive_delay,
        share_between_slots=on_cpu,
        inline_lone_calls=on_cpu,
    )
    batcher = Batcher(
        run,
        config,
        name=f"{name}:{version}",
        observer=observer,
        alone=metrics.requests_in_flight.alone,
        trace_attributes=tracing.named(model=name, version=version),
        unit=unit,
    )
    metrics.track_batcher(name, version, lambda: batcher.queued_images, lambda: batcher.in_flight_images)
    return batcher


def latent_request(fields: GenerateBody, max_n: int, default_n: int) -> LatentRequest:
    """What to draw from a generator of images or clips: the checks that need no model (`n` up to `max_n`,
    `default_n` without it or latents)."""
    psi = params.check_truncation(fields.truncation)
    if fields.cols is not None:
        params.check_range("cols", fields.cols, 1, max_n)
    if fields.latents is None:
        count = params.check_range("n", default_n if fields.n is None else fields.n, 1, max_n)
        return LatentRequest(seeds=params.seed_range(fields.seed, count), truncation=psi, label=fields.label)
    if fields.seed is not None:
        raise InvalidParameter("seed", "give either seed or latents, not both")
    latents = params.parse_latents(fields.latents, max_n)
    if fields.n is not None and fields.n != len(latents):
        raise InvalidParameter("n", f"is {fields.n} but {len(latents)} latents were given")
    return LatentRequest(latents=latents, truncation=psi, label=fields.label)


def refuse_text_fields(fields: GenerateBody, model_version: ModelVersion, makes: str) -> None:
    """422 for text-only fields (or format=text) sent to a generator that `makes` something else."""
    for name in TEXT_FIELDS:
        if getattr(fields, name) is not None:
            raise InvalidParameter(name, f"is for text generators; {model_version.name!r} {makes}")
    if fields.format is GenerateFormat.text:
        raise InvalidParameter("format", f"text is for text generators; {model_version.name!r} {makes}")
