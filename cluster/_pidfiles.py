"""Node processes seen through pid files and /proc (Linux): find, check, signal, wait.

The launcher that started a node may be gone (`up --detach`, or another terminal), so
`status`, `kill`, `down` and friends find nodes through `<dir>/<id>/node.pid`. A pid file
can outlive its process and the pid can be reused by anything, so a pid is trusted only
while /proc/<pid>/cmdline still has both the node marker (`sessionquorum.store`) and that
node's own data dir as arguments: then it is this cluster's node, not some other program
or another cluster's node. Nothing here ever signals a pid that fails that check.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

NODE_MARKER = "sessionquorum.store"
POLL_INTERVAL_S = 0.01


def proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat (R, S, T, Z, ...), None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name in parentheses may itself hold spaces or ")"; the state follows the last ")".
    fields = stat.rpartition(")")[2].split()
    return fields[0] if fields else None


def is_running(pid: int) -> bool:
    """True for a live process, stopped (T) included; False for a zombie or no process."""
    return proc_state(pid) not in (None, "Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_node_process(pid: int, node_dir: Path) -> bool:
    """Whether `pid` is alive and is the node that owns `node_dir` (see the module docstring)."""
    args = cmdline(pid)
    return is_running(pid) and NODE_MARKER in args and str(node_dir) in args


def read_pid_file(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def write_pid_file(path: Path, pid: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{pid}\n", encoding="utf-8")
    os.replace(tmp, path)


def remove_pid_file(path: Path, pid: int) -> None:
    """Remove the pid file only if it still names `pid`: another launcher may have restarted the node."""
    if read_pid_file(path) == pid:
        path.unlink(missing_ok=True)


def verified_pid(pid_file: Path, node_dir: Path) -> int | None:
    """The pid in `pid_file` if it is still that node's process, else None."""
    pid = read_pid_file(pid_file)
    if pid is None or not is_node_process(pid, node_dir):
        return None
    return pid


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `condition` until it holds or `timeout_s` passes; returns whether it held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)
    return True


def terminate_all(pids: list[int], timeout_s: float) -> set[int]:
    """SIGTERM (and SIGCONT, so a paused node gets it) each pid, then SIGKILL what is left.

    For processes that are not our children (we cannot waitpid them), so exits are seen in
    /proc. Signals go out to all first, so N nodes stop in one timeout, not N.
    Returns the pids that needed SIGKILL.
    """
    for pid in pids:
        send(pid, signal.SIGTERM)
        send(pid, signal.SIGCONT)
    if wait_for(lambda: not any(is_running(p) for p in pids), timeout_s):
        return set()
    stubborn = {p for p in pids if is_running(p)}
    for pid in stubborn:
        send(pid, signal.SIGKILL)
    wait_for(lambda: not any(is_running(p) for p in stubborn), timeout_s)
    return stubborn


def send(pid: int, sig: signal.Signals) -> None:
    """Send a signal, ignoring a process that has just gone away."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
