"""A process's startup heap is kept out of the cyclic garbage collector's full collections.

What is imported and built by the end of a process's first request (modules, classes,
validators, pools) lives as long as the process, yet every full collection walks it
again: some 125,000 objects in the local runner, 30 to 80 ms of CPU each time, charged
to whichever turn allocates past the threshold (memory's lazily imported numpy brought
one into the baseline bench's 300 turns: 70-80 ms, 3 ms with the heap frozen).
`gc.freeze()` once the first request is answered moves those objects to the permanent
generation, as CPython advises for long-lived processes. Reference counting frees
objects as before; only cycles among the frozen ones stay, a one-time cost.

The same moment raises the youngest generation's threshold (`YOUNG_THRESHOLD`): with
turns in flight side by side their live objects alone cross CPython's 700, so at 64
connections the collector ran on one turn in four, finding nothing, and promoted what
was in flight until full collections (some 80 ms each over the sessions' cached
windows) came every few hundred turns: 0.4-0.5 ms of a 2 ms turn, against 0.01 ms at
one connection (issue 30). A turn leaves no cycles of its own to collect.
"""

from __future__ import annotations

import gc

from starlette.types import ASGIApp, Receive, Scope, Send

YOUNG_THRESHOLD = 10_000
"""Net allocations of tracked objects before a young collection: above what 64 turns in
flight hold, a few hundred kilobytes of young objects at most."""
OLDER_THRESHOLDS = (10, 10)
"""Young collections per middle one, middle ones per full one (CPython's 10, 10)."""

_frozen: list[bool] = []
"""Not empty once this process has frozen its heap (one freeze per process)."""


def freeze_startup_heap() -> None:
    """Moves every object the collector tracks now to its permanent generation and raises
    the young threshold; only the first call in a process does anything."""
    if not _frozen:
        _frozen.append(True)
        gc.freeze()
        gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


class StartupHeapFreeze:
    """Freezes the process's heap (`freeze_startup_heap`) once its first HTTP request is
    answered, when what a request builds lazily has been built too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _frozen or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            freeze_startup_heap()
