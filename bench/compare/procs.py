"""Processes the harness starts itself: free ports, start with a log file, CPU time, stop by pid.

Every server runs in its own session (start_new_session), so Ctrl-C in the terminal reaches
only the harness, which then stops each process it started by its pid: SIGTERM, a grace
period, SIGKILL. Nothing is ever looked up or stopped by name.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
STOP_TIMEOUT_S = 5.0
POLL_S = 0.05
# /proc/<pid>/stat counts CPU time in clock ticks.
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def free_ports(count: int) -> list[int]:
    """Distinct ports the kernel says are free on 127.0.0.1 (all held until all are chosen)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def cpu_seconds(pid: int | str) -> float | None:
    """User + system CPU time of a process, all its threads included; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    # utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, log: Path | None = None) -> None:
    """Poll `condition` until it holds; on timeout raise with the tail of the process's log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(POLL_S)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}{log_tail(log)}")


def log_tail(log: Path | None, lines: int = 30) -> str:
    """The end of a server's log, to put in an error: a failure is only debuggable from it."""
    if log is None:
        return ""
    try:
        return "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f" (no log at {log})"


class ServerProcess:
    """One server process we started, its output appended to `log`."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, cwd: Path | None = None) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            out.write(f"--- starting {name}: {shlex.join(argv)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
            )
        logger.info("started %s as pid %d", name, self._proc.pid)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def running(self) -> bool:
        return self._proc.poll() is None

    def check_running(self) -> None:
        code = self._proc.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with code {code}{log_tail(self.log)}")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code (-N: signal N)."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                return self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s (pid %d) ignored SIGTERM for %.0f s; killing it",
                    self.name,
                    self.pid,
                    timeout_s,
                )
                self._proc.kill()
        return self._proc.wait()
