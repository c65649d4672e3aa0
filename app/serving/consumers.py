"""What the batchers of every kind share: winding down their consumer task, and telling their observer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


async def wind_down(consumer: asyncio.Task[None] | None, *, drain: bool, timeout_s: float) -> None:
    """Let a batcher's consumer finish the work it holds (within `timeout_s`, when `drain`), then cancel it."""
    if consumer is None or consumer.done():
        return
    if drain:
        await asyncio.wait({consumer}, timeout=timeout_s)
    if not consumer.done():
        consumer.cancel()
        await asyncio.wait({consumer})


def notify(hook: Callable[[], None], batcher: str) -> None:
    """Call an observer's hook; an observer that raises is logged and never breaks the batcher."""
    try:
        hook()
    except Exception:
        logger.exception("observer of batcher %r raised; ignoring", batcher)
