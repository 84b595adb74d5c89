"""Stopping a background task for certain, whatever redis-py does with the cancellation."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task[Any], *, timeout: float = 10.0) -> None:
    """Cancel ``task`` and wait until it has really ended (or ``timeout`` passed).

    One ``cancel()`` is not enough on Python 3.11: redis-py wraps every socket write in
    ``asyncio.wait_for``, which there drops a cancellation that arrives just as the write
    completes, and a loop around Redis calls then runs on forever. So cancel again until the
    task is done.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        if loop.time() > deadline:
            logger.warning("task did not stop in time", extra={"task": task.get_name()})
            return
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.warning("task ended with an error", extra={"task": task.get_name()}, exc_info=exc)
