"""Running a function in a forked copy of the test process, for fork-safety tests.

The child reports through a pipe and always leaves with os._exit, so it never runs pytest's
own teardown (fixtures, atexit hooks) twice; a child that hangs is killed and fails the test.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

CHILD_TIMEOUT_S = 20.0


def in_child(
    work: Callable[[], Any], timeout_s: float = CHILD_TIMEOUT_S, *, then: Callable[[], None] | None = None
) -> Any:
    """Fork; run `work` in the child and return its JSON result here; its error fails the test.

    `then` runs in the parent right after the fork, while the child works: both halves then
    start from the very same state.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running anything of pytest's
        code = 0
        try:
            os.close(read_end)
            try:
                message = {"result": work()}
            except BaseException:
                message = {"error": traceback.format_exc()}
            with os.fdopen(write_end, "w") as out:
                json.dump(message, out)
        except BaseException:
            code = 70
        finally:
            os._exit(code)
    os.close(write_end)
    if then is not None:
        then()
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([read_end], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        else:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the forked child did not finish within {timeout_s} s (killed)")
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    message = json.loads(b"".join(chunks))
    assert "error" not in message, message["error"]
    return message["result"]
