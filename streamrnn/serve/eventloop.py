"""The event loop of the daemon and of `bench`'s clients: uvloop where it is installed (Linux and
macOS; the daemon's network side then costs about a sixth less CPU, see BENCHMARKS.md), asyncio's
own elsewhere."""
from __future__ import annotations

import asyncio
from typing import Coroutine

try:
    import uvloop
except ImportError:  # Windows: uvloop does not build there
    uvloop = None


def run(main: Coroutine):
    return uvloop.run(main) if uvloop else asyncio.run(main)
