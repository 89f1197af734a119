"""Running a coroutine from a synchronous test without leaving event-loop state behind."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


def run_async(main: Coroutine[Any, Any, _T]) -> _T:
    """asyncio.run(main), then a fresh event loop policy.

    asyncio.run() ends by setting "no current loop", after which code that makes a grpc.aio
    object outside a loop (grpc.aio.server() calls get_event_loop()) fails in whatever test
    happens to run next. The loop itself is closed by then; only that flag is dropped.
    """
    try:
        return asyncio.run(main)
    finally:
        asyncio.set_event_loop_policy(None)
