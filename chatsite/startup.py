"""What a server process does once it is up, whichever server runs it (daphne or uvicorn)."""

from __future__ import annotations

import gc


async def process_started() -> None:
    """Start the run manager, then take everything loaded so far out of the garbage
    collector's sight.

    Django, DRF, the Anthropic SDK and the rest are hundreds of thousands of objects that
    live as long as the process. A full collection walks all of them: measured at 100
    streams on PostgreSQL + Redis, 100-140 ms pauses of the event loop a few times in 15 s,
    which were the relay's p99. `gc.freeze()` moves them to a permanent generation that
    collections skip; what is allocated afterwards (requests, runs, streams) is collected
    as usual.
    """
    from chat.runs import manager

    await manager.ensure_started()
    gc.freeze()
